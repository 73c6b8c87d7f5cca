package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// TestHTTPCountsOnlyProvenUsers: real JupyterHubs behind the gateway over
// HTTPS. Requests naming users with forged jupyterhub-user-* cookies
// take nothing; alice, whom forged cookies name, still logs in over SSH
// with max_sessions_per_user 1; a real login is counted on the node
// whose hub answered. Also: HSTS, plain HTTP with 1 MB headers on the
// TLS port, the admin API's cross-site and Host refusals, the CLI.
func TestHTTPCountsOnlyProvenUsers(t *testing.T) {
	requirePeers(t, "jupyterhub", "curl")
	p := newPool(t, poolOptions{hubs: true, cfg: func(c *app.Config) {
		c.SSH.MaxSessionsPerUser = 1
		c.Balancer.MaxSessionsPerNode = 2
	}})
	base := "https://" + p.gw.HTTPAddr()
	client := &http.Client{Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: 16},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, cookie string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	rnd := rand.New(rand.NewPCG(15, 1))
	statuses := map[int]int{}
	for i := range 150 {
		name := fmt.Sprintf("scan%06x", rnd.Uint32()&0xffffff)
		cookie := "jupyterhub-user-" + name + "=2|1:0|10:1700000000|forged"
		paths := []string{"/hub/", "/hub/login", "/user/" + name + "/tree", "/user/" + name + "/api/kernels", "/user/" + name + "/static/base/images/favicon.ico", "/hub/home"}
		statuses[get(paths[i%len(paths)], cookie).StatusCode]++
	}
	for i := range 20 {
		cookie := "jupyterhub-user-alice=2|1:0|10:1700000000|forged"
		paths := []string{"/user/alice/tree", "/user/alice/api/kernels", "/hub/home", "/user/alice/api/kernels/x/channels"}
		hdr := []string{}
		if i%4 == 3 {
			hdr = []string{"Upgrade", "websocket", "Connection", "Upgrade", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
		}
		statuses[get(paths[i%len(paths)], cookie, hdr...).StatusCode]++
	}
	t.Logf("the hubs answered the anonymous requests with %v", statuses)
	if n := p.gw.Balancer().Started(balancer.HTTP); n != 0 {
		t.Fatalf("anonymous requests took %d HTTP leases", n)
	}
	for _, n := range apiNodes(t, p) {
		if n.Sessions.HTTP != 0 || len(n.Users) != 0 {
			t.Fatalf("after anonymous requests, /api/nodes shows %s with %d HTTP sessions, users %v", n.Name, n.Sessions.HTTP, n.Users)
		}
	}

	// alice, named by 20 forged cookies, logs in over SSH (one session
	// allowed), and so do bob and carol (two per node allowed).
	for _, u := range []string{"alice", "bob", "carol"} {
		h := p.hold(u)
		h.close()
	}

	// A real login through the gateway counts on the node that answered.
	out, err := runOut("curl", "-sk", "-D", "-", "-o", "/dev/null", "-d", "username=erin&password=x", base+"/hub/login")
	if err != nil {
		t.Fatalf("curl login: %v: %s", err, out)
	}
	if !strings.Contains(strings.ToLower(out), "set-cookie: jupyterhub-hub-login=") {
		t.Fatalf("the hub did not log erin in:\n%s", out)
	}
	erin := ""
	for _, s := range p.gw.Balancer().Sessions() {
		if s.User == "erin" && s.Protocol == balancer.HTTP {
			erin = s.Node
		}
	}
	if erin == "" {
		t.Fatalf("erin's real login is not counted: %+v", p.gw.Balancer().Sessions())
	}

	// HSTS on the HTTPS answers; the hub's Server header stays inside.
	resp := get("/hub/login", "")
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
		t.Fatalf("Strict-Transport-Security %q", got)
	}
	if s := resp.Header.Get("Server"); s != "" {
		t.Fatalf("the hub's Server header passed through: %q", s)
	}

	t.Run("plain HTTP with 1 MB headers on the TLS port", func(t *testing.T) {
		grown := peakHeapGrowth(func() {
			var wg sync.WaitGroup
			for range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("tcp", p.gw.HTTPAddr())
					if err != nil {
						t.Error(err)
						return
					}
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(30 * time.Second))
					go func() {
						fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: pool.example\r\nX-Big: ")
						chunk := strings.Repeat("b", 64<<10)
						for range 16 {
							if _, err := io.WriteString(c, chunk); err != nil {
								return
							}
						}
						io.WriteString(c, "\r\n\r\n")
					}()
					if r, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
						r.Body.Close()
						if r.StatusCode != 431 {
							t.Errorf("plain request with a 1 MB header: %d, want 431", r.StatusCode)
						}
					}
				}()
			}
			wg.Wait()
		})
		t.Logf("heap grew by at most %.1f MiB", float64(grown)/(1<<20))
		if grown >= 20<<20 {
			t.Fatalf("40 plain requests with 1 MB headers grew the heap by %.1f MiB, want < 20", float64(grown)/(1<<20))
		}
	})

	t.Run("admin API refuses cross-site and foreign hosts; the CLI works", func(t *testing.T) {
		admin := "http://" + p.gw.AdminAddr()
		name := p.nodes[0].name
		req, _ := http.NewRequest("POST", admin+"/api/nodes/"+name+"/drain", nil)
		req.Header.Set("Origin", "http://evil.example")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 403 {
			t.Fatalf("drain with a foreign Origin: %d, want 403", r.StatusCode)
		}
		for _, n := range apiNodes(t, p) {
			if n.State != "up" {
				t.Fatalf("the refused drain changed %s to %s", n.Name, n.State)
			}
		}
		req, _ = http.NewRequest("GET", admin+"/api/sessions", nil)
		req.Host = "rebound.evil.example"
		r, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 421 && r.StatusCode != 403 {
			t.Fatalf("GET /api/sessions with a foreign Host: %d, want 421 or 403", r.StatusCode)
		}
		bin := buildPoolgate(t)
		out, err := runOut(bin, "nodes", "--admin", admin)
		if err != nil || !strings.Contains(out, name) {
			t.Fatalf("poolgate nodes: %v\n%s", err, out)
		}
	})
}

// peakHeapGrowth runs f and returns how far the heap in use rose above
// what it was before, sampled every 5 ms.
func peakHeapGrowth(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	peak := base
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak - base
}

// runOut runs a command and returns its combined output.
func runOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
