package deploy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// Issue 13, item 6: each node runs Prometheus node_exporter on its
// private address, which only the gateways may reach, and the gateway
// scrapes it there.

func TestNodeExporterReachableFromGatewaysOnly(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA, "nodeCount": 1}), defaultWorld())
	checkOnlyGateways(t, ev, 22, 8000, 9100)
	if ok, rule := nsgAllows(t, nsgRules(t, ev, "nodes-nsg"), gatewayAddr, 9400); ok {
		// Without dcgm-exporter the port stays as Azure's defaults
		// leave it; nothing listens there. It must not be opened to all.
		if rule != "AllowVnetInBound (Azure's default)" {
			t.Errorf("port 9400 is opened by rule %s without nodeGpuExporterPort", rule)
		}
	}
	gpu := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA, "nodeGpuExporterPort": 9400}), defaultWorld())
	checkOnlyGateways(t, gpu, 22, 8000, 9100, 9400)

	// The gateway scrapes the port the nodes listen on.
	for _, tc := range []struct {
		ev       evaluated
		gpuPort  int
		comesOut string
	}{{ev, 0, "off"}, {gpu, 9400, "on"}} {
		cfg, err := app.LoadConfig(gatewayConfigFile(t, tc.ev))
		if err != nil {
			t.Fatalf("dcgm %s: the gateway's config does not load: %v", tc.comesOut, err)
		}
		if *cfg.Load.MetricsPort != 9100 || cfg.Load.GPUMetricsPort != tc.gpuPort {
			t.Errorf("dcgm %s: load.metrics_port %d, load.gpu_metrics_port %d; want 9100, %d", tc.comesOut, *cfg.Load.MetricsPort, cfg.Load.GPUMetricsPort, tc.gpuPort)
		}
	}
}

func TestNodeConfigureInstallsNodeExporter(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA}), defaultWorld())
	script := extensionScript(t, ev, "")
	vm := newScratchVM(t)
	out, calls, err := vm.run(script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	wrapper, mode := vm.file("usr/local/sbin/poolgate-node-exporter")
	if mode != 0o755 || !strings.Contains(wrapper, `--web.listen-address="$addr:9100"`) || !strings.Contains(wrapper, "ip -4 -o route get 10.20.0.0 ") {
		t.Errorf("wrapper (mode %v):\n%s", mode, wrapper)
	}
	dropIn, _ := vm.file("etc/systemd/system/prometheus-node-exporter.service.d/10-poolgate.conf")
	if !strings.Contains(dropIn, "[Service]\nExecStart=\nExecStart=/usr/local/sbin/poolgate-node-exporter\n") {
		t.Errorf("the drop-in does not replace the package's ExecStart:\n%s", dropIn)
	}
	reload := slices.Index(calls, "systemctl daemon-reload")
	install := slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, "apt-get install -y -q prometheus-node-exporter") })
	if install < 0 || reload < 0 || reload > install {
		t.Errorf("want the drop-in loaded (daemon-reload) before the package is installed (its first start): %q", calls)
	}
	for _, want := range []string{"systemctl enable prometheus-node-exporter", "systemctl restart prometheus-node-exporter"} {
		if !called(calls, want) {
			t.Errorf("first run: no %q in %q", want, calls)
		}
	}
	// Again: nothing changes, nothing is installed or restarted.
	out, calls, err = vm.run(script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if called(calls, "apt-get") || called(calls, "systemctl restart prometheus-node-exporter") || !called(calls, "systemctl start prometheus-node-exporter") {
		t.Errorf("second run: %q", calls)
	}

	// No package to be had: the node still joins the pool (poolgate falls
	// back to session counts), and the script says why.
	vm = newScratchVM(t)
	out, calls, err = vm.run(script, "STUB_APT_FAIL=1")
	if err != nil || !strings.Contains(out, "could not install prometheus-node-exporter") || !called(calls, "mount /data/share") {
		t.Errorf("without the package: err %v, output %q", err, out)
	}
}

// TestNodeExporterListensOnPrivateAddressOnly runs the real Debian
// prometheus-node-exporter through the wrapper the node set-up writes,
// with `ip` answering as a node whose address towards the gateways is
// 127.0.0.N: it answers there, and not on another address of the host.
func TestNodeExporterListensOnPrivateAddressOnly(t *testing.T) {
	if _, err := os.Stat("/usr/bin/prometheus-node-exporter"); err != nil {
		requireTool(t, "prometheus-node-exporter")
		t.Skip("prometheus-node-exporter is not at /usr/bin, where the wrapper runs it")
	}
	ev := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA}), defaultWorld())
	vm := newScratchVM(t)
	if out, _, err := vm.run(extensionScript(t, ev, "")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	wrapper, _ := vm.file("usr/local/sbin/poolgate-node-exporter")

	private := fmt.Sprintf("127.0.%d.%d", 100+os.Getpid()%100, 2+os.Getpid()%250)
	l, err := net.Listen("tcp", private+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	wrapper = strings.Replace(wrapper, `"$addr:9100"`, fmt.Sprintf(`"$addr:%d"`, port), 1)
	dir := t.TempDir()
	ip := fmt.Sprintf("#!/bin/sh\n[ \"$*\" = \"-4 -o route get 10.20.0.0\" ] || exit 2\necho '10.20.0.0 via 10.20.1.1 dev eth0 src %s uid 0 \\    cache '\n", private)
	for name, text := range map[string]string{"ip": ip, "poolgate-node-exporter": wrapper} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(dir, "poolgate-node-exporter"))
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "ARGS=--collector.disable-defaults --collector.loadavg"}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	url := fmt.Sprintf("http://%s:%d/metrics", private, port)
	var body string
	for i := 0; i < 100 && !strings.Contains(body, "node_load1 "); i++ {
		if resp, err := http.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !strings.Contains(body, "node_load1 ") {
		t.Fatalf("node_exporter does not answer on the private address %s:%d: %s", private, port, stderr.String())
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("node_exporter also answers on 127.0.0.1:%d: it listens on more than the private address", port)
	}
}
