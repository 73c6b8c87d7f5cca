package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NodeExporterBinary is the node_exporter that StartNodeExporter runs:
// where Debian installs it. A test may point it elsewhere before starting
// any exporter.
var NodeExporterBinary = "/usr/bin/prometheus-node-exporter"

// MemTotalKiB is the MemTotal every test node reports: 16 GiB.
const MemTotalKiB = 16 << 20

// Load is what a test node's procfs says.
type Load struct {
	Load1        float64 // 1-minute load average (node_load1)
	CPUs         int     // number of CPUs in /proc/stat; 0 means 4
	MemAvailable float64 // fraction of MemTotal available, 0–1
}

// Idle is a node with nothing running: load 0 on 4 CPUs, all memory
// available.
var Idle = Load{Load1: 0, CPUs: 4, MemAvailable: 1}

// NodeExporter is a running prometheus-node-exporter reading a procfs of
// the test's own (loadavg, stat and meminfo) through --path.procfs, with
// only the loadavg, cpu and meminfo collectors.
type NodeExporter struct {
	// Addr is the host:port it listens on.
	Addr string
	// Dir is the procfs directory it reads.
	Dir string

	t   testing.TB
	log string // the exporter's own log file

	// mu protects cmd and done.
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartNodeExporter writes l into a new procfs directory and starts
// node_exporter on addr ("127.0.0.N:0" picks a free port). It returns
// once the exporter answers /metrics, and stops it at the end of the test.
func StartNodeExporter(t testing.TB, addr string, l Load) *NodeExporter {
	t.Helper()
	mustLoopback(t, addr)
	if _, err := os.Stat(NodeExporterBinary); err != nil {
		msg := fmt.Sprintf("%s not found (apt-get install prometheus-node-exporter): %v", NodeExporterBinary, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; set CI=1 to make this a failure")
	}
	dir := t.TempDir()
	e := &NodeExporter{Dir: filepath.Join(dir, "proc"), t: t, log: filepath.Join(dir, "node_exporter.log")}
	if err := os.Mkdir(e.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.SetLoad(l)
	t.Cleanup(e.Stop)
	fixed := !strings.HasSuffix(addr, ":0")
	var err error
	for try := 0; try < 3; try++ {
		e.Addr = addr
		if !fixed {
			if e.Addr, err = freePort(addr); err != nil {
				t.Fatal(err)
			}
		}
		if err = e.start(); err == nil {
			return e
		}
		if fixed {
			break
		}
	}
	t.Fatalf("starting node_exporter on %s: %v\n%s", e.Addr, err, e.Log())
	return nil
}

// mustLoopback fails the test unless addr is an IP:port in 127.0.0.0/8
// (or ::1): tests reach nothing else.
func mustLoopback(t testing.TB, addr string) {
	t.Helper()
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		t.Fatalf("loadtest listens on loopback addresses only, not %q", addr)
	}
}

// freePort returns host:port with a port that was free a moment ago.
func freePort(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("finding a free port on %s: %w", addr, err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs the exporter on e.Addr and waits until it answers.
func (e *NodeExporter) start() error {
	logf, err := os.OpenFile(e.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(NodeExporterBinary,
		"--web.listen-address="+e.Addr,
		"--path.procfs="+e.Dir,
		"--collector.disable-defaults",
		"--collector.loadavg",
		"--collector.cpu",
		"--collector.meminfo",
		"--web.disable-exporter-metrics",
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	e.mu.Lock()
	e.cmd, e.done = cmd, done
	e.mu.Unlock()

	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return errors.New("node_exporter exited")
		default:
		}
		resp, err := client.Get("http://" + e.Addr + "/metrics")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			e.Stop()
			return fmt.Errorf("no answer within 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SetLoad rewrites loadavg, stat and meminfo; the exporter reads them on
// every scrape, so the next scrape reports l. Each file is replaced
// atomically: a scrape never sees half a file.
func (e *NodeExporter) SetLoad(l Load) {
	e.t.Helper()
	cpus := l.CPUs
	if cpus == 0 {
		cpus = 4
	}
	avail := int64(min(max(l.MemAvailable, 0), 1) * MemTotalKiB)
	files := map[string]string{
		"loadavg": fmt.Sprintf("%.2f %.2f %.2f 1/200 4242\n", l.Load1, l.Load1, l.Load1),
		"stat":    procStat(cpus),
		"meminfo": fmt.Sprintf("MemTotal:       %d kB\nMemFree:        %d kB\nMemAvailable:   %d kB\nBuffers:        0 kB\nCached:         0 kB\nSwapTotal:      0 kB\nSwapFree:       0 kB\n",
			MemTotalKiB, avail, avail),
	}
	for name, body := range files {
		tmp := filepath.Join(e.Dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			e.t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(e.Dir, name)); err != nil {
			e.t.Fatal(err)
		}
	}
}

// procStat is a /proc/stat for n CPUs.
func procStat(n int) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "cpu  %d 0 %d %d 0 0 0 0 0 0\n", 100*n, 50*n, 1000*n)
	for i := range n {
		fmt.Fprintf(&b, "cpu%d 100 0 50 1000 0 0 0 0 0 0\n", i)
	}
	b.WriteString("intr 0\nctxt 0\nbtime 1700000000\nprocesses 100\nprocs_running 1\nprocs_blocked 0\nsoftirq 0 0 0 0 0 0 0 0 0 0 0\n")
	return b.String()
}

// Stop ends the exporter (SIGTERM, then SIGKILL after 5s) and waits for
// it. Its address then refuses connections. Stopping a stopped exporter
// does nothing.
func (e *NodeExporter) Stop() {
	e.mu.Lock()
	cmd, done := e.cmd, e.done
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts a stopped exporter again on the same address.
func (e *NodeExporter) Restart() {
	e.t.Helper()
	e.Stop()
	if err := e.start(); err != nil {
		e.t.Fatalf("restarting node_exporter on %s: %v\n%s", e.Addr, err, e.Log())
	}
}

// Running reports whether the exporter process is alive.
func (e *NodeExporter) Running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return false
	}
	select {
	case <-e.done:
		return false
	default:
		return true
	}
}

// Log returns what the exporter wrote to stdout and stderr so far.
func (e *NodeExporter) Log() string {
	b, _ := os.ReadFile(e.log)
	return string(b)
}

// Scrape fetches the exporter's /metrics once (for a test's own checks).
func (e *NodeExporter) Scrape(ctx context.Context) (string, error) {
	return get(ctx, "http://"+e.Addr+"/metrics")
}

func get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}
