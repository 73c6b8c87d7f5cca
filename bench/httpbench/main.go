package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var backends = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}

const (
	httpPort   = "8000"
	sshPort    = "2222" // a fake banner, so the gateway's SSH checks pass
	gwAddr     = "127.0.0.1:8080"
	haAddr     = "127.0.0.1:8081"
	gwAdmin    = "127.0.0.1:9091"
	benchPath  = "/user/alice/api/status" // a routed request of a logged-in user
	anonPath   = "/hub/login"             // an anonymous request (gets a signed cookie)
	pprofAddr  = "127.0.0.1:6062"
	bodyString = `{"started":"2026-11-26T00:00:00Z","last_activity":"2026-11-26T00:00:00Z","connections":1,"kernels":1}`
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		runBackend(os.Args[2])
		return
	}
	duration := flag.Duration("duration", 10*time.Second, "length of each wrk run")
	connList := flag.String("conns", "64,512", "wrk connection counts")
	wsCount := flag.Int("websockets", 1000, "WebSockets to hold open for the memory figure (0: skip)")
	accessLog := flag.Bool("access-log", false, "keep the gateway's per-request access log on (off by default: it measures logging, not proxying)")
	profile := flag.String("profile", "", "write a 10 s CPU profile of the gateway to this file (see -profile-run)")
	profileRun := flag.String("profile-run", "user:64", "the run to profile: user or anon, a colon and a connection count")
	flag.Parse()

	for _, bin := range []string{"wrk", "haproxy"} {
		if _, err := exec.LookPath(bin); err != nil {
			fatalf("%s is not installed (apt-get install wrk haproxy)", bin)
		}
	}
	dir, err := os.MkdirTemp("", "httpbench")
	check(err)
	defer os.RemoveAll(dir)

	defer stopAll()
	self, err := os.Executable()
	check(err)
	for _, ip := range backends {
		cmd := exec.Command(self, "backend", ip)
		cmd.Stderr = os.Stderr
		check(cmd.Start())
		procs = append(procs, cmd)
		check(waitHTTP("http://" + ip + ":" + httpPort + "/hub/health"))
	}

	// poolgate, built from this tree.
	bin := filepath.Join(dir, "poolgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/poolgate")
	build.Stderr = os.Stderr
	check(build.Run())
	cfg := fmt.Sprintf(`state_dir: %s/state
ssh:
  listen: 127.0.0.1:0
  authorized_keys: %s/keys/{user}
admin:
  listen: %s
http:
  listen: %s
  tls: false
  upstream_tls: false
  access_log: %v
health: {interval: 1s}
discovery:
  static:
`, dir, dir, gwAdmin, gwAddr, *accessLog)
	for i, ip := range backends {
		cfg += fmt.Sprintf("    - {name: node-%d, ssh: '%s:%s', http: '%s:%s'}\n", i+1, ip, sshPort, ip, httpPort)
	}
	cfgPath := filepath.Join(dir, "poolgate.yaml")
	check(os.WriteFile(cfgPath, []byte(cfg), 0o600))
	args := []string{"serve", "--config", cfgPath}
	if *profile != "" {
		args = append(args, "--pprof", pprofAddr)
	}
	gw := exec.Command(bin, args...)
	gwLog, err := os.Create(filepath.Join(dir, "poolgate.log"))
	check(err)
	gw.Stderr = gwLog
	check(gw.Start())
	procs = append(procs, gw)
	if err := waitNodesUp(); err != nil {
		logText, _ := os.ReadFile(gwLog.Name())
		fatalf("%v; gateway log:\n%s", err, logText)
	}

	// HAProxy 2.6: leastconn over the same backends, default threads.
	ha := fmt.Sprintf(`global
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend fe
  bind %s
  default_backend hubs
backend hubs
  balance leastconn
  option forwardfor
  http-reuse safe
`, haAddr)
	for i, ip := range backends {
		ha += fmt.Sprintf("  server node-%d %s:%s check\n", i+1, ip, httpPort)
	}
	haCfg := filepath.Join(dir, "haproxy.cfg")
	check(os.WriteFile(haCfg, []byte(ha), 0o644))
	haCmd := exec.Command("haproxy", "-db", "-f", haCfg)
	haLog, err := os.Create(filepath.Join(dir, "haproxy.log"))
	check(err)
	haCmd.Stderr = haLog
	check(haCmd.Start())
	procs = append(procs, haCmd)
	if err := waitHTTP("http://" + haAddr + "/hub/health"); err != nil {
		logText, _ := os.ReadFile(haLog.Name())
		fatalf("haproxy: %v:\n%s", err, logText)
	}

	var wsLine string
	if *wsCount > 0 {
		wsLine = websockets(gw.Process.Pid, *wsCount) // first, on a fresh gateway
	}
	fmt.Printf("## HTTP gateway vs HAProxy %s vs direct\n\n", haproxyVersion())
	fmt.Printf("`go run ./bench/httpbench -duration %s -conns %s -websockets %d`; wrk -t2, %s runs; three Go backends answering %d bytes; %d CPUs.\n\n",
		*duration, *connList, *wsCount, *duration, len(bodyString), numCPU())
	fmt.Println("| target | conns | req/s | p99 | req/s vs HAProxy | p99 vs HAProxy |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, c := range strings.Split(*connList, ",") {
		conns, err := strconv.Atoi(strings.TrimSpace(c))
		check(err)
		// Warm every target's keep-alive pools before measuring.
		for _, u := range []string{"http://" + haAddr + benchPath, "http://" + gwAddr + benchPath} {
			wrk(u, conns, 2*time.Second)
		}
		direct := wrk("http://"+backends[0]+":"+httpPort+benchPath, conns, *duration)
		haRes := wrk("http://"+haAddr+benchPath, conns, *duration)
		// profiled runs wrk on path, taking the gateway's CPU profile
		// meanwhile when the run is the one -profile-run names.
		profiled := func(kind, path string) result {
			if *profile == "" || *profileRun != fmt.Sprintf("%s:%d", kind, conns) {
				return wrk("http://"+gwAddr+path, conns, *duration)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/profile?seconds=10")
				if err == nil {
					f, _ := os.Create(*profile)
					_, _ = io.Copy(f, resp.Body)
					f.Close()
					resp.Body.Close()
				}
			}()
			r := wrk("http://"+gwAddr+path, conns, *duration)
			<-done
			return r
		}
		gwRes := profiled("user", benchPath)
		anon := profiled("anon", anonPath)
		for _, row := range []struct {
			name string
			r    result
		}{{"direct to one backend", direct}, {"HAProxy leastconn", haRes}, {"poolgate (user path)", gwRes}, {"poolgate (anonymous, signs a cookie)", anon}} {
			fmt.Printf("| %s | %d | %.0f | %s | %.2f× | %.2f× |\n", row.name, conns, row.r.rps, row.r.p99.Round(10*time.Microsecond), row.r.rps/haRes.rps, float64(row.r.p99)/float64(haRes.p99))
		}
	}
	if wsLine != "" {
		fmt.Println()
		fmt.Println(wsLine)
	}
}

type result struct {
	rps float64
	p99 time.Duration
}

var (
	reqRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p99Re = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
)

func wrk(url string, conns int, d time.Duration) result {
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d"+d.String(), "--latency", url).CombinedOutput()
	if err != nil {
		fatalf("wrk %s: %v\n%s", url, err, out)
	}
	if strings.Contains(string(out), "Non-2xx") {
		fatalf("wrk %s: some answers were not 2xx:\n%s", url, out)
	}
	var r result
	if m := reqRe.FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := p99Re.FindSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[2])]
		r.p99 = time.Duration(v * float64(unit))
	}
	if r.rps == 0 {
		fatalf("wrk %s: no result:\n%s", url, out)
	}
	return r
}

// websockets opens n upgraded connections through the gateway, each to a
// backend echo, checks one round trip on each, and reports the gateway's
// resident memory per connection once they are idle, then closes them.
func websockets(pid, n int) string {
	before := rss(pid)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", gwAddr)
		check(err)
		fmt.Fprintf(c, "GET /user/u%d/api/kernels/k/channels HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", i, gwAddr)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			fatalf("websocket %d: %v %v", i, resp, err)
		}
		fmt.Fprintf(c, "ping\n")
		if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
			fatalf("websocket %d echo: %q %v", i, line, err)
		}
		conns = append(conns, c)
	}
	opened := time.Since(start)
	time.Sleep(3 * time.Second) // let the heap settle
	after := rss(pid)
	sessions := httpSessions()
	return fmt.Sprintf("%d WebSockets held open through a freshly started gateway (opened in %s): gateway RSS %.1f MiB → %.1f MiB, **%.1f KiB per WebSocket**; the gateway counted %d HTTP sessions.",
		n, opened.Round(time.Millisecond), float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/float64(n)/1024, sessions)
}

func rss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func httpSessions() int {
	resp, err := http.Get("http://" + gwAdmin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, `poolgate_node_sessions{`) && strings.Contains(line, `protocol="http"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(v)
		}
	}
	return total
}

func waitHTTP(url string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200", url)
}

func waitNodesUp() error {
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + gwAdmin + "/api/nodes")
		if err == nil {
			var body struct {
				Nodes []struct {
					State     string `json:"state"`
					HTTPState string `json:"http_state"`
				}
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			up := 0
			for _, n := range body.Nodes {
				if n.State == "up" && n.HTTPState == "up" {
					up++
				}
			}
			if err == nil && up == len(backends) {
				return nil
			}
			last = fmt.Sprintf("%+v", body.Nodes)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the gateway's nodes did not come up (last: %s)", last)
}

// procs are the processes the bench started; stopAll ends them.
var procs []*exec.Cmd

func stopAll() {
	for _, p := range procs {
		_ = p.Process.Signal(syscall.SIGTERM)
		_ = p.Wait()
	}
	procs = nil
}

// runBackend serves a small JSON answer on every path (and /hub/health),
// a line echo after a WebSocket upgrade, and an SSH banner for the
// gateway's node checks.
func runBackend(ip string) {
	sshLn, err := net.Listen("tcp", ip+":"+sshPort)
	check(err)
	go func() {
		for {
			c, err := sshLn.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("SSH-2.0-httpbench\r\n"))
			c.Close()
		}
	}()
	body := []byte(bodyString)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			for {
				line, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				_, _ = brw.WriteString(line)
				_ = brw.Flush()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	srv := &http.Server{Addr: ip + ":" + httpPort, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	check(srv.ListenAndServe())
}

func haproxyVersion() string {
	out, _ := exec.Command("haproxy", "-v").Output()
	f := strings.Fields(string(out))
	if len(f) > 2 {
		return f[2]
	}
	return "?"
}

func numCPU() int {
	out, _ := exec.Command("nproc").Output()
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "httpbench: "+format+"\n", args...)
	stopAll()
	os.Exit(1)
}
