package loadtest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func scrape(t *testing.T, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := get(ctx, "http://"+addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestNodeExporter(t *testing.T) {
	ne := StartNodeExporter(t, "127.0.0.2:0", Load{Load1: 15.9, CPUs: 4, MemAvailable: 0.1})
	if !strings.HasPrefix(ne.Addr, "127.0.0.2:") || strings.HasSuffix(ne.Addr, ":0") {
		t.Fatalf("Addr = %q, want 127.0.0.2 with a real port", ne.Addr)
	}
	body := scrape(t, ne.Addr)
	for _, want := range []string{
		"node_load1 15.9\n",
		`node_cpu_seconds_total{cpu="3",mode="idle"}`,
		"node_memory_MemTotal_bytes 1.7179869184e+10\n",
		"node_memory_MemAvailable_bytes 1.717986304e+09\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, `cpu="4"`) {
		t.Error("scrape shows a fifth CPU")
	}

	ne.SetLoad(Load{Load1: 0.5, CPUs: 2, MemAvailable: 0.5})
	body = scrape(t, ne.Addr)
	if !strings.Contains(body, "node_load1 0.5\n") || strings.Contains(body, `cpu="2"`) || !strings.Contains(body, "node_memory_MemAvailable_bytes 8.589934592e+09\n") {
		t.Errorf("after SetLoad the scrape does not show load 0.5 on 2 CPUs, half the memory:\n%s", body)
	}

	ne.Stop()
	if ne.Running() {
		t.Fatal("Running after Stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ne.Scrape(ctx); err == nil {
		t.Fatal("a stopped exporter still answers")
	}
	ne.Stop() // twice is fine

	ne.Restart()
	if !ne.Running() {
		t.Fatal("not Running after Restart")
	}
	if body := scrape(t, ne.Addr); !strings.Contains(body, "node_load1 0.5\n") {
		t.Errorf("after Restart:\n%s", body)
	}
}

func TestNodeExporterFixedPort(t *testing.T) {
	first := StartNodeExporter(t, "127.0.0.3:0", Idle)
	first.Stop()
	ne := StartNodeExporter(t, first.Addr, Idle) // the port just freed
	if ne.Addr != first.Addr {
		t.Fatalf("Addr = %q, want %q", ne.Addr, first.Addr)
	}
	if body := scrape(t, ne.Addr); !strings.Contains(body, "node_load1 0\n") {
		t.Errorf("idle node:\n%s", body)
	}
}

func TestStaticDCGM(t *testing.T) {
	d := StartDCGM(t, "127.0.0.4:0", GPU{Util: 97, UsedMiB: 39000, FreeMiB: 1000}, GPU{Util: 3, UsedMiB: 500, FreeMiB: 39500})
	body := scrape(t, d.Addr)
	for _, want := range []string{
		"# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n",
		`DCGM_FI_DEV_GPU_UTIL{gpu="0",`,
		`device="nvidia1",modelName="NVIDIA A100-SXM4-40GB",Hostname="testnode"} 3` + "\n",
		`DCGM_FI_DEV_FB_FREE{gpu="1",`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	d.Set(GPU{Util: 100, UsedMiB: 40000, FreeMiB: 0})
	if body := scrape(t, d.Addr); strings.Contains(body, `gpu="1"`) || !strings.Contains(body, "} 100\n") {
		t.Errorf("after Set:\n%s", body)
	}
	d.Stop()
	d.Stop()
}

// fakeTB records Skip and Fatal and stops the helper there.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

type stop struct{}

func (f *fakeTB) Helper()          {}
func (f *fakeTB) Skip(args ...any) { f.skipped = fmt.Sprint(args...); panic(stop{}) }
func (f *fakeTB) Fatal(args ...any) {
	f.fatal = fmt.Sprint(args...)
	panic(stop{})
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	panic(stop{})
}

func TestMissingBinary(t *testing.T) {
	saved := NodeExporterBinary
	NodeExporterBinary = filepath.Join(t.TempDir(), "no-such-exporter")
	defer func() { NodeExporterBinary = saved }()
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		f := &fakeTB{TB: t}
		func() {
			defer func() {
				if r := recover(); r != nil && r != (stop{}) {
					panic(r)
				}
			}()
			StartNodeExporter(f, "127.0.0.2:0", Idle)
		}()
		got := f.skipped
		if ci != "" {
			got = f.fatal
			if f.skipped != "" {
				t.Errorf("CI=%s: skipped (%s), want a failure", ci, f.skipped)
			}
		} else if f.fatal != "" {
			t.Errorf("CI unset: failed (%s), want a skip", f.fatal)
		}
		if !strings.Contains(got, "apt-get install prometheus-node-exporter") {
			t.Errorf("CI=%q: message %q does not say how to install it", ci, got)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.0.0.4:9100", "localhost:0"} {
		f := &fakeTB{TB: t}
		func() {
			defer func() {
				if r := recover(); r != nil && r != (stop{}) {
					panic(r)
				}
			}()
			StartStatic(f, addr, nil)
		}()
		if !strings.Contains(f.fatal, "loopback") {
			t.Errorf("StartStatic(%q) did not refuse it (fatal %q)", addr, f.fatal)
		}
	}
}
