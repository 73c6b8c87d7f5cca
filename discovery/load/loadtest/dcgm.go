package loadtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
)

// GPU is one GPU as a stand-in dcgm-exporter reports it.
type GPU struct {
	Util    float64 // DCGM_FI_DEV_GPU_UTIL, percent
	UsedMiB float64 // DCGM_FI_DEV_FB_USED
	FreeMiB float64 // DCGM_FI_DEV_FB_FREE
}

// DCGMText renders gpus (index 0, 1, …) as dcgm-exporter's /metrics
// does: its HELP texts and its label layout (gpu, UUID, pci_bus_id,
// device, modelName, Hostname), one series per GPU. The figures are the
// test's own; see discovery/load/testdata for a recorded output.
func DCGMText(gpus ...GPU) []byte {
	var b bytes.Buffer
	for _, f := range []struct {
		name, help string
		v          func(GPU) float64
	}{
		{"DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", func(g GPU) float64 { return g.Util }},
		{"DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", func(g GPU) float64 { return g.FreeMiB }},
		{"DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", func(g GPU) float64 { return g.UsedMiB }},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", f.name, f.help, f.name)
		for i, g := range gpus {
			fmt.Fprintf(&b, "%s{gpu=\"%d\",UUID=\"GPU-00000000-0000-0000-0000-%012d\",pci_bus_id=\"00000000:%02X:00.0\",device=\"nvidia%d\",modelName=\"NVIDIA A100-SXM4-40GB\",Hostname=\"testnode\"} %g\n",
				f.name, i, i, 0x10+i, i, f.v(g))
		}
	}
	return b.Bytes()
}

// Static serves a fixed /metrics body that the test may change: a
// stand-in for dcgm-exporter, or for any exporter that cannot run here.
type Static struct {
	// Addr is the host:port it listens on.
	Addr string

	srv  *http.Server
	done chan struct{} // closed when Serve has returned

	// mu protects body.
	mu   sync.Mutex
	body []byte
}

// StartDCGM serves DCGMText(gpus...) on addr ("127.0.0.N:0" picks a free
// port) until the end of the test.
func StartDCGM(t testing.TB, addr string, gpus ...GPU) *Static {
	t.Helper()
	return StartStatic(t, addr, DCGMText(gpus...))
}

// StartStatic serves body at /metrics on addr until the end of the test,
// as text format 0.0.4.
func StartStatic(t testing.TB, addr string, body []byte) *Static {
	t.Helper()
	mustLoopback(t, addr)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &Static{Addr: ln.Addr().String(), body: body, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		b := s.body
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(b)
	})
	s.srv = &http.Server{Handler: mux}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serving metrics on %s: %v", s.Addr, err)
		}
	}()
	t.Cleanup(s.Stop)
	return s
}

// Set replaces the body with DCGMText(gpus...).
func (s *Static) Set(gpus ...GPU) { s.SetBody(DCGMText(gpus...)) }

// SetBody replaces the body served from the next request on.
func (s *Static) SetBody(b []byte) {
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

// Stop closes the server and its connections; its address then refuses
// connections. Stopping twice does nothing.
func (s *Static) Stop() {
	_ = s.srv.Close()
	<-s.done
}
