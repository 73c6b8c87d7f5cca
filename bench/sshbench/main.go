package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	"golang.org/x/crypto/ssh"
)

var (
	hold       bool
	ciphers    []string
	profileDir string
	gatewayEnv []string // extra environment for the gateway, e.g. GODEBUG
)

const (
	benchUser = "pgbench"
	nodeAddr  = "127.0.0.2:2222"
	gwAddr    = "127.0.0.1:2200"
	pprofAddr = "127.0.0.1:6061"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "node" {
		runNode(os.Args[2:])
		return
	}
	only := flag.String("only", "", "run one part: throughput, setup, idle or recording")
	flag.BoolVar(&hold, "hold", false, "after the setup part, keep the gateway and node running until interrupted (for captures)")
	size := flag.Int64("size", 1<<30, "bytes per throughput run")
	runs := flag.Int("runs", 3, "runs per throughput and recording figure (median reported)")
	ptySize := flag.Int64("pty-size", 256<<20, "bytes of PTY output per recording run")
	logins := flag.Int("logins", 50, "sequential logins for the setup figure")
	idle := flag.Int("idle", 2000, "concurrent idle sessions")
	flag.StringVar(&profileDir, "profile", "", "save the gateway's profiles into this directory: CPU during transfers, heap and goroutines with idle sessions open")
	cipherList := flag.String("ciphers", "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com", "ciphers for the throughput part")
	env := flag.String("gateway-env", "", "extra environment for the gateway process, e.g. GODEBUG=adaptivestackstart=0")
	flag.Parse()
	if *env != "" {
		gatewayEnv = strings.Fields(*env)
	}
	ciphers = strings.Split(*cipherList, ",")
	if os.Geteuid() != 0 {
		fatal("sshbench needs root: it runs sshd and adds the user " + benchUser)
	}
	b := newBench()
	current = b
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; fatal("interrupted") }()
	defer b.cleanup()
	fmt.Printf("# sshbench, %s, %d cores\n\n", time.Now().UTC().Format("2006-01-02"), numCPU())
	if *only == "" || *only == "throughput" {
		b.throughput(*size, *runs)
	}
	if *only == "" || *only == "setup" {
		b.setup(*logins)
	}
	if *only == "" || *only == "idle" {
		b.idle(*idle)
	}
	if *only == "" || *only == "recording" {
		b.recording(*ptySize, *runs)
	}
}

// current is the running bench, cleaned up on fatal errors too.
var (
	current *bench
	fatalMu sync.Mutex // the first fatal error cleans up; others wait for it
)

func fatal(msg string) {
	fatalMu.Lock() // never unlocked: the process ends here
	fmt.Fprintln(os.Stderr, "sshbench:", msg)
	if current != nil {
		current.cleanup()
	}
	os.Exit(1)
}

func must(err error, what string) {
	if err != nil {
		fatal(what + ": " + err.Error())
	}
}

func numCPU() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(data), "processor\t:")
}

type bench struct {
	dir     string
	bin     string
	key     string
	procs   []*exec.Cmd
	gateway *exec.Cmd
	sshd    bool // startSSHD ran
}

func run(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		fatal(fmt.Sprintf("%s %s: %v: %s", name, strings.Join(args, " "), err, out))
	}
	return string(out)
}

func newBench() *bench {
	dir, err := os.MkdirTemp("", "sshbench")
	must(err, "temp dir")
	// sshd reads authorized_keys as the user: the directory must be open.
	must(os.Chmod(dir, 0o755), "temp dir")
	b := &bench{dir: dir, bin: filepath.Join(dir, "poolgate"), key: filepath.Join(dir, "id_ed25519")}
	run("go", "build", "-o", b.bin, "./cmd/poolgate")
	if _, err := user.Lookup(benchUser); err != nil {
		run("useradd", "-m", "-s", "/bin/sh", benchUser)
	}
	run("usermod", "-p", "*", benchUser)
	run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", b.key)
	pub, _ := os.ReadFile(b.key + ".pub")
	must(os.MkdirAll(filepath.Join(dir, "keys", benchUser), 0o755), "keys")
	must(os.WriteFile(filepath.Join(dir, "keys", benchUser, "authorized_keys"), pub, 0o644), "keys")
	must(os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o644), "keys")
	conf := fmt.Sprintf("state_dir: %s/state\nssh:\n  listen: %s\n  authorized_keys: %s/keys/{user}/authorized_keys\n  max_unauthenticated: 1000\nhealth:\n  interval: 500ms\ndiscovery:\n  static:\n    - {name: node-1, ssh: '%s'}\n", dir, gwAddr, dir, nodeAddr)
	must(os.WriteFile(filepath.Join(dir, "poolgate.yaml"), []byte(conf), 0o644), "config")
	ca := run(b.bin, "ca-pubkey", "--config", filepath.Join(dir, "poolgate.yaml"))
	must(os.WriteFile(filepath.Join(dir, "ca.pub"), []byte(ca), 0o644), "ca")
	return b
}

func (b *bench) cleanup() {
	current = nil // a failure while cleaning up must not recurse
	b.stopGateway()
	for _, p := range b.procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	b.procs = nil
	os.RemoveAll(b.dir)
}

func (b *bench) start(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	must(cmd.Start(), name)
	b.procs = append(b.procs, cmd)
	return cmd
}

// waitPort waits for an SSH server's version line on addr.
func waitPort(addr string) {
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			_, _ = c.Write([]byte("SSH-2.0-sshbench\r\n"))
			c.Close()
			if strings.HasPrefix(line, "SSH-") {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	fatal(addr + " did not open")
}

func (b *bench) startSSHD() {
	must(os.MkdirAll("/run/sshd", 0o755), "/run/sshd")
	run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(b.dir, "host_key"))
	conf := fmt.Sprintf("ListenAddress %s\nHostKey %s/host_key\nPidFile none\nTrustedUserCAKeys %s/ca.pub\nAuthorizedKeysFile %s/authorized_keys\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\nMaxStartups 500\nMaxSessions 100\nLogLevel ERROR\n", nodeAddr, b.dir, b.dir, b.dir)
	must(os.WriteFile(filepath.Join(b.dir, "sshd_config"), []byte(conf), 0o600), "sshd_config")
	b.start("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(b.dir, "sshd_config"))
	waitPort(nodeAddr)
	b.sshd = true
}

// startGateway runs poolgate serve, optionally with another node list.
func (b *bench) startGateway(node string) {
	conf := filepath.Join(b.dir, "poolgate.yaml")
	if node != nodeAddr {
		data, _ := os.ReadFile(conf)
		conf = filepath.Join(b.dir, "poolgate-idle.yaml")
		// Another node: another name, or the gateway's known host key
		// for node-1 would (rightly) refuse it.
		data = bytes.ReplaceAll(data, []byte(nodeAddr), []byte(node))
		data = bytes.ReplaceAll(data, []byte("name: node-1"), []byte("name: idle-node"))
		must(os.WriteFile(conf, data, 0o644), "config")
	}
	b.startGatewayConf(conf)
}

// startGatewayConf runs poolgate serve with the config file conf.
func (b *bench) startGatewayConf(conf string) {
	b.gateway = exec.Command(b.bin, "serve", "--config", conf, "--log-level", "warn", "--pprof", pprofAddr)
	b.gateway.Stderr = os.Stderr
	b.gateway.Env = append(os.Environ(), gatewayEnv...)
	must(b.gateway.Start(), "poolgate")
	waitPort(gwAddr)
	time.Sleep(time.Second) // first health check
}

func (b *bench) stopGateway() {
	if b.gateway != nil {
		_ = b.gateway.Process.Kill()
		_ = b.gateway.Wait()
		b.gateway = nil
	}
}

// cpuSeconds is the CPU time a process has used.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(err, "reading stat")
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// rssKiB is a process's resident set size.
func rssKiB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(err, "reading status")
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	return 0
}

func goroutines() int {
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1")
	must(err, "pprof")
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total ")))
	return n
}

// clientOpts are the options every client run uses: this bench's key
// only, no host-key prompts, the given cipher and curve25519 key exchange
// (x/crypto has no sntrup761, so direct logins use the same).
func (b *bench) clientOpts(cipher string) []string {
	return []string{"-F", "/dev/null", "-i", b.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-c", cipher, "-o", "KexAlgorithms=curve25519-sha256"}
}

func (b *bench) sshArgs(addr, cipher string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return append(append([]string{"-p", port}, b.clientOpts(cipher)...), benchUser+"@"+host)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func percentile(xs []float64, p float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// timed runs a shell pipeline and returns its wall time in seconds.
func timed(script string) float64 {
	start := time.Now()
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		fatal(fmt.Sprintf("%s: %v: %s", script, err, out))
	}
	return time.Since(start).Seconds()
}

func quote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func (b *bench) throughput(size int64, runs int) {
	b.startSSHD()
	b.startGateway(nodeAddr)
	defer b.stopGateway()
	file := filepath.Join("/dev/shm", "sshbench.bin")
	run("bash", "-c", "head -c "+strconv.FormatInt(size, 10)+" /dev/urandom > "+file)
	defer os.Remove(file)
	gib := float64(size) / (1 << 30)
	fmt.Printf("## Throughput, %.1f GiB per run, median of %d\n\n", gib, runs)
	fmt.Println("| cipher | test | direct MiB/s | via gateway MiB/s | ratio | gateway CPU s/GiB |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, cipher := range ciphers {
		for _, test := range []string{"cat", "scp"} {
			var direct, via, cpu []float64
			for i := 0; i < runs; i++ {
				for _, addr := range []string{nodeAddr, gwAddr} {
					args := b.sshArgs(addr, cipher)
					var script string
					if test == "cat" {
						script = fmt.Sprintf("ssh %s 'cat >/dev/null' < %s", quote(args), file)
					} else {
						host, port, _ := net.SplitHostPort(addr)
						scpArgs := append(append([]string{"-q", "-P", port}, b.clientOpts(cipher)...), file, benchUser+"@"+host+":/dev/null")
						script = "scp " + quote(scpArgs)
					}
					var profiled chan struct{}
					if profileDir != "" && i == 0 && addr == gwAddr {
						// A CPU profile of the gateway during this transfer.
						profiled = make(chan struct{})
						name := fmt.Sprintf("cpu-%s-%s.pb.gz", strings.TrimSuffix(cipher, "@openssh.com"), test)
						go func() {
							defer close(profiled)
							resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/profile?seconds=2")
							must(err, "pprof")
							data, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							must(os.WriteFile(filepath.Join(profileDir, name), data, 0o644), "profile")
						}()
					}
					before := cpuSeconds(b.gateway.Process.Pid)
					secs := timed(script)
					if profiled != nil {
						<-profiled
					}
					used := cpuSeconds(b.gateway.Process.Pid) - before
					if addr == nodeAddr {
						direct = append(direct, secs)
					} else {
						via = append(via, secs)
						cpu = append(cpu, used/gib)
					}
				}
			}
			d, v := median(direct), median(via)
			mib := float64(size) / (1 << 20)
			fmt.Printf("| %s | %s | %.0f | %.0f | %.2f× | %.2f |\n", strings.TrimSuffix(cipher, "@openssh.com"), test, mib/d, mib/v, d/v, median(cpu))
		}
	}
	fmt.Println()
}

func (b *bench) setup(n int) {
	if b.gateway == nil {
		if !b.sshd {
			b.startSSHD()
		}
		b.startGateway(nodeAddr)
		defer b.stopGateway()
	}
	fmt.Printf("## Login latency: %d sequential `ssh host true`, curve25519-sha256, aes128-gcm\n\n", n)
	fmt.Println("| path | median ms | p90 ms |")
	fmt.Println("| --- | --- | --- |")
	res := map[string][]float64{}
	for i := 0; i < n; i++ { // interleaved, so drift hits both alike
		for _, addr := range []string{nodeAddr, gwAddr} {
			secs := timed("ssh " + quote(b.sshArgs(addr, "aes128-gcm@openssh.com")) + " true")
			res[addr] = append(res[addr], secs*1000)
		}
	}
	d, v := res[nodeAddr], res[gwAddr]
	fmt.Printf("| direct | %.1f | %.1f |\n| via gateway | %.1f | %.1f |\n\n", median(d), percentile(d, 0.9), median(v), percentile(v, 0.9))
	fmt.Printf("Added by the gateway: %.1f ms at the median.\n\n", median(v)-median(d))
	slow := func(xs []float64) int {
		n, m := 0, median(xs)
		for _, x := range xs {
			if x > m+25 {
				n++
			}
		}
		return n
	}
	fmt.Printf("Logins more than 25 ms over their path's median: direct %d of %d, via gateway %d of %d.\n\n", slow(d), n, slow(v), n)
	// The same with a Go client (x/crypto, curve25519, aes128-gcm), which
	// keeps the OpenSSH client's own behaviour out of the comparison.
	signer, err := ssh.ParsePrivateKey(mustRead(b.key))
	must(err, "client key")
	goLogin := func(addr string, quickAck bool) float64 {
		start := time.Now()
		nc, err := net.Dial("tcp", addr)
		must(err, "dial "+addr)
		if quickAck {
			nc = &quickAckConn{nc}
		}
		sc, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
			User: benchUser, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			Config: ssh.Config{KeyExchanges: []string{"curve25519-sha256"}, Ciphers: []string{"aes128-gcm@openssh.com"}},
		})
		must(err, "go client login to "+addr)
		c := ssh.NewClient(sc, chans, reqs)
		s, err := c.NewSession()
		must(err, "session")
		must(s.Run("true"), "true")
		c.Close()
		return float64(time.Since(start).Microseconds()) / 1000
	}
	var gd, gq, gv []float64
	for i := 0; i < n; i++ {
		gd = append(gd, goLogin(nodeAddr, false))
		gq = append(gq, goLogin(nodeAddr, true))
		gv = append(gv, goLogin(gwAddr, false))
	}
	fmt.Println("With a Go (x/crypto) client instead of OpenSSH's:")
	fmt.Println()
	fmt.Println("| path | median ms | p90 ms |")
	fmt.Println("| --- | --- | --- |")
	fmt.Printf("| direct | %.1f | %.1f |\n| direct, client acknowledging at once (TCP_QUICKACK) | %.1f | %.1f |\n| via gateway | %.1f | %.1f |\n\n",
		median(gd), percentile(gd, 0.9), median(gq), percentile(gq, 0.9), median(gv), percentile(gv, 0.9))
	if hold {
		fmt.Printf("holding: gateway on %s, node on %s, key %s; interrupt to stop\n", gwAddr, nodeAddr, b.key)
		select {}
	}
}

func (b *bench) idle(n int) {
	const idleNode = "127.0.0.3:2222"
	b.start(os.Args[0], "node", "--listen", idleNode, "--ca", filepath.Join(b.dir, "ca.pub"))
	waitPort(idleNode)
	b.startGateway(idleNode)
	defer b.stopGateway()
	signer, err := ssh.ParsePrivateKey(mustRead(b.key))
	must(err, "client key")
	cfg := &ssh.ClientConfig{User: benchUser, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second}
	open := func(count int) []io.Closer {
		var mu sync.Mutex
		var out []io.Closer
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		for i := 0; i < count; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := ssh.Dial("tcp", gwAddr, cfg)
				must(err, "dial")
				s, err := c.NewSession()
				must(err, "session")
				_, err = s.StdinPipe()
				must(err, "stdin")
				must(s.Start("idle"), "start")
				mu.Lock()
				out = append(out, c)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return out
	}
	warm := open(20) // steady state: pools, first-use allocations
	time.Sleep(2 * time.Second)
	pid := b.gateway.Process.Pid
	rss0, g0 := rssKiB(pid), goroutines()
	conns := open(n)
	time.Sleep(5 * time.Second) // let the sessions settle
	rss1, g1 := rssKiB(pid), goroutines()
	if profileDir != "" {
		for p, file := range map[string]string{"heap": "heap.pb.gz", "goroutine": "goroutine.pb.gz", "heap?debug=1": "memstats.txt"} {
			resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/" + p)
			must(err, "pprof")
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			must(os.WriteFile(filepath.Join(profileDir, file), data, 0o644), "profile")
		}
	}
	// Then as a long-running gateway would be: the handshakes' garbage
	// collected (pprof's gc=1 runs a GC) and returned by the scavenger.
	// Go shrinks a stack by half per GC cycle, so give it a few.
	for i := 0; i < 4; i++ {
		resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?gc=1")
		must(err, "pprof")
		resp.Body.Close()
		time.Sleep(8 * time.Second)
	}
	if profileDir != "" {
		resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?debug=1")
		must(err, "pprof")
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		must(os.WriteFile(filepath.Join(profileDir, "memstats-settled.txt"), data, 0o644), "profile")
		resp, err = http.Get("http://" + pprofAddr + "/debug/pprof/heap")
		must(err, "pprof")
		data, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		must(os.WriteFile(filepath.Join(profileDir, "heap-settled.pb.gz"), data, 0o644), "profile")
	}
	rss2 := rssKiB(pid)
	fmt.Printf("## %d concurrent idle sessions (each: one connection, one session channel running a command)\n\n", n)
	fmt.Println("| gateway RSS before | with the sessions open | per session | after 4 GC cycles | per session | goroutines per session |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	fmt.Printf("| %d MiB | %d MiB | %.1f KiB | %d MiB | %.1f KiB | %.1f |\n\n", rss0/1024, rss1/1024, float64(rss1-rss0)/float64(n),
		rss2/1024, float64(rss2-rss0)/float64(n), float64(g1-g0)/float64(n))
	for _, c := range append(conns, warm...) {
		c.Close()
	}
}

// quickAckConn acknowledges at once after every read (Linux TCP_QUICKACK).
type quickAckConn struct{ net.Conn }

func (c *quickAckConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if raw, rerr := c.Conn.(*net.TCPConn).SyscallConn(); rerr == nil && n > 0 {
		_ = raw.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1) })
	}
	return n, err
}

func mustRead(path string) []byte {
	data, err := os.ReadFile(path)
	must(err, "reading "+path)
	return data
}

// runNode is a light SSH node for the idle test (sshd would need two
// processes per session): it trusts the CA and holds each session open
// until the client closes it.
func runNode(args []string) {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	listen := fs.String("listen", "", "address")
	caFile := fs.String("ca", "", "CA public key")
	_ = fs.Parse(args)
	ca, _, _, _, err := ssh.ParseAuthorizedKey(mustRead(*caFile))
	must(err, "CA key")
	srv := &gliderssh.Server{
		Addr: *listen,
		Handler: func(s gliderssh.Session) {
			_, _ = io.Copy(io.Discard, s)
		},
		PublicKeyHandler: func(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
			cert, ok := key.(*ssh.Certificate)
			return ok && bytes.Equal(cert.SignatureKey.Marshal(), ca.Marshal()) && (&ssh.CertChecker{}).CheckCert(ctx.User(), cert) == nil
		},
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	must(err, "host key")
	hk, err := ssh.NewSignerFromKey(priv)
	must(err, "host key")
	srv.AddHostKey(hk)
	must(srv.ListenAndServe(), "node")
}
