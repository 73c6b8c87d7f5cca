// Package loadtest runs real node exporters for tests of load-based
// placement: the Debian prometheus-node-exporter reading a procfs the test
// writes, and a stand-in dcgm-exporter (which needs an NVIDIA GPU) that
// serves text in dcgm-exporter's format.
//
// Usage, in a test:
//
//	ne := loadtest.StartNodeExporter(t, "127.0.0.2:0", loadtest.Load{Load1: 15.9, CPUs: 4, MemAvailable: 0.1})
//	// ne.Addr is "127.0.0.2:PORT": a load.Target's Metrics.
//	ne.SetLoad(loadtest.Idle) // the next scrape reports the new figures
//	ne.Stop()                 // the node's exporter goes away (Cleanup also stops it)
//	ne.Restart()              // and comes back on the same address
//
//	gpu := loadtest.StartDCGM(t, "127.0.0.2:0", loadtest.GPU{Util: 100, UsedMiB: 40000, FreeMiB: 960})
//	// gpu.Addr is a load.Target's GPUMetrics.
//	gpu.Set(loadtest.GPU{Util: 3, UsedMiB: 500, FreeMiB: 40460})
//
// StartNodeExporter needs /usr/bin/prometheus-node-exporter (apt-get
// install prometheus-node-exporter). Without it the test is skipped, or
// fails when the environment variable CI is set, so that CI never passes
// by skipping.
//
// Everything listens on loopback addresses the test names (others fail
// the test), and every process started is stopped (by its own PID) and
// waited for at Cleanup.
//
// loadtest is imported by tests only. It imports nothing of poolgate, so
// that tests of any package (discovery/load, e2e) can use it.
package loadtest
