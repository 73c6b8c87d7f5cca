// Package load measures what each node really carries, for placement by
// load: CPU and memory from the node's Prometheus node_exporter, GPU and
// GPU memory from NVIDIA's dcgm-exporter when the node has one.
//
// It owns the parsing of the exporters' responses ([ParseNode],
// [ParseGPU]), the scrape loop ([Scraper]) and the meaning of a [Sample]:
//
//   - CPU = node_load1 ÷ the number of CPUs, counted as the distinct
//     "cpu" labels of node_cpu_seconds_total: the run queue per CPU. It
//     exceeds 1 when work waits for a CPU (15.9 on 4 CPUs is 3.97).
//   - Memory = 1 − MemAvailable/MemTotal.
//   - GPU and GPUMemory come from one GPU: the least busy of the node's
//     GPUs (busy = the higher of DCGM_FI_DEV_GPU_UTIL/100 and
//     FB_USED/(FB_USED+FB_FREE)), with ties to the lowest index. A new
//     user is placed on a node, not on a GPU; once there, they can be
//     given (or pick with CUDA_VISIBLE_DEVICES) the freest GPU, so what
//     the node can offer a newcomer is that GPU's headroom. An average
//     would call a node with one idle and one saturated GPU half busy and
//     a maximum would call it full, while a newcomer there gets a whole
//     idle GPU. Both figures are of the same GPU, so that an idle GPU
//     whose memory is full and a busy one with free memory do not add up
//     to a free GPU that does not exist. A MIG instance (GPU_I_ID label)
//     counts as a GPU of its own; dcgm-exporter gives no utilisation for
//     MIG, so GPU may be nil while GPUMemory is set. FB_RESERVED, which
//     newer drivers report apart, is left out: used/(used+free) is the
//     share of what a program can allocate.
//
// A figure that was not measured is nil, never zero: its exporter is not
// configured or failed, the metric is missing, or the values make no
// sense (NaN, no CPUs, MemTotal 0).
//
// Scrapes run concurrently (one goroutine per exporter per node and
// round), each bounded by [Config.Timeout] and [MaxBody], and never on a
// login path: the [Sink] only ever receives finished samples. A node's
// sample merges its exporters' last good figures that are younger than
// [Config.StaleAfter] (three intervals); its At is the oldest of them.
// When none is that young the node gets no report, and the sink's last
// sample ages until [Sample.Stale] says it is missing: the consumer (the
// balancer) decides staleness from At, as it must anyway between rounds.
// A node's exporter failing and recovering is logged once each, at Info.
// Only the configured address is scraped: a redirect is not followed but
// is that exporter's scrape error. Every round also tells the sink the
// node's scrape error, or nil once all its exporters answered
// (Sink.SetLoadError), so that ops see why a node has no figures.
//
// Usage (cmd wires it; sink adapts the balancer to Sink):
//
//	sc, err := load.New(cfg.Load, sink, load.Options{Logger: log})
//	if err != nil { ... }                      // names the bad key
//	sc.SetTargets([]load.Target{{Name: "node-1", Metrics: "10.0.0.4:9100"}})
//	go sc.Run(ctx)
//	...
//	if s.Stale(now, cfg.Load.StaleAfter()) { /* judge by sessions alone */ }
//
// Tests use Options.Now and Options.Client, and discovery/load/loadtest
// for real node_exporter processes.
//
// load imports only the standard library, the Prometheus exposition
// libraries (prometheus/common's expfmt, client_model, protobuf's
// protodelim) and zap: not balancer (the Sink interface is declared here)
// and never gateway.
package load
