package app

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// DemoExporter is a stand-in for a demo node's Prometheus node_exporter,
// so that the demo shows load beside sessions: it serves, in
// node_exporter's text format, fixed figures of its own on 4 CPUs (the
// demo nodes share one process, so their real figures could not tell
// them apart). The demo gives node-N a CPU of 0.05 × (N−1) per CPU and a
// memory use of 0.25 + 0.05 × (N−1): small enough that the README's
// story holds (bob lands beside, not with, alice).
type DemoExporter struct {
	ln  net.Listener
	srv *http.Server
	// CPU is the load per CPU served, Memory the fraction in use.
	CPU, Memory float64
}

const demoCPUs = 4

// StartDemoExporter serves on addr (e.g. 127.0.0.1:0).
func StartDemoExporter(addr string, cpu, memory float64) (*DemoExporter, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	e := &DemoExporter{ln: ln, CPU: cpu, Memory: memory}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", e.metrics)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
	return e, nil
}

// Addr is where it listens.
func (e *DemoExporter) Addr() string { return e.ln.Addr().String() }

// Close stops it.
func (e *DemoExporter) Close() { _ = e.srv.Close() }

func (e *DemoExporter) metrics(w http.ResponseWriter, _ *http.Request) {
	const total = 16 << 30
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# TYPE node_load1 gauge\nnode_load1 %g\n# TYPE node_cpu_seconds_total counter\n", e.CPU*demoCPUs)
	for i := range demoCPUs {
		fmt.Fprintf(w, "node_cpu_seconds_total{cpu=\"%d\",mode=\"idle\"} %d\n", i, 1000+i)
	}
	fmt.Fprintf(w, "# TYPE node_memory_MemAvailable_bytes gauge\nnode_memory_MemAvailable_bytes %d\n", int64((1-e.Memory)*total))
	fmt.Fprintf(w, "# TYPE node_memory_MemTotal_bytes gauge\nnode_memory_MemTotal_bytes %d\n", int64(total))
}
