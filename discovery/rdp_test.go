package discovery

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/testutil"
)

// xrdpConfirm is the Connection Confirm xrdp 0.9 sends to a request for
// TLS or CredSSP (it selects TLS).
var xrdpConfirm = []byte("\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x01\x00\x00\x00")

func TestRDPChecker(t *testing.T) {
	var answer atomic.Value
	answer.Store(xrdpConfirm)
	var mu sync.Mutex
	var got [][]byte
	addr := testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) {
		buf := make([]byte, 19)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		mu.Lock()
		got = append(got, buf)
		mu.Unlock()
		_, _ = c.Write(answer.Load().([]byte))
	})
	var dmu sync.Mutex
	details := map[string]string{}
	rec := &recorder{}
	to := StatusFunc(func(node string, _ balancer.Protocol, up bool, detail string) {
		dmu.Lock()
		details[node] = detail
		dmu.Unlock()
		rec.SetHealth(node, balancer.SSH, up, detail)
	})
	c := NewRDPChecker(HealthConfig{Interval: 10 * time.Millisecond, Rise: 1, Fall: 1}, to, CheckerOptions{})
	c.SetNodes([]balancer.Node{{Name: "win", SSH: "127.0.0.1:1", RDP: addr}, {Name: "linux", SSH: "127.0.0.1:1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	rec.waitChanges(t, 1)
	answer.Store([]byte("SSH-2.0-OpenSSH_9.2\r\n")) // something else answers on the port
	if ch := rec.waitChanges(t, 2); ch[0] != "win up" || ch[1] != "win down" {
		t.Fatalf("changes %v, want win up then win down", ch)
	}
	dmu.Lock()
	defer dmu.Unlock()
	if d := details["win"]; !strings.Contains(d, "no connection confirm") {
		t.Fatalf("detail %q", d)
	}
	if _, probed := details["linux"]; probed {
		t.Fatal("a node without an RDP address was probed")
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got[0], rdpProbeRequest) || got[0][5] != 0xe0 {
		t.Fatalf("probe sent %q", got[0])
	}
}

func TestRDPProbeRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := RDPProbe(&net.Dialer{})(ctx, balancer.Node{Name: "n", RDP: addr}); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed port: %v", err)
	}
}

func TestStaticRDP(t *testing.T) {
	s := Static{{Name: "w", SSH: "10.0.0.4:22", RDP: "10.0.0.4:3389"}}
	if err := (Config{Static: s}).Validate(); err != nil {
		t.Fatal(err)
	}
	if n := s.Nodes()[0]; n.RDP != "10.0.0.4:3389" {
		t.Fatalf("node %+v", n)
	}
	bad := Config{Static: []StaticNode{{Name: "w", SSH: "10.0.0.4:22", RDP: "10.0.0.4"}}}
	if err := bad.Validate(); err == nil || !strings.HasPrefix(err.Error(), "static[0].rdp:") {
		t.Fatalf("bad rdp address: %v", err)
	}
	az := AzureConfig{SubscriptionID: "00000000-0000-0000-0000-000000000000", ResourceGroup: "rg", ScaleSet: "s", RDPPort: 70000}
	if err := az.WithDefaults().Validate(); err == nil || !strings.HasPrefix(err.Error(), "rdp_port:") {
		t.Fatalf("bad rdp_port: %v", err)
	}
}

func FuzzReadConnectionConfirm(f *testing.F) {
	f.Add(xrdpConfirm)
	f.Add([]byte("SSH-2.0-x\r\n"))
	f.Add([]byte("\x03\x00\x04\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		if err := ReadConnectionConfirm(r); err == nil && (len(b) < 11 || b[5]&0xf0 != 0xd0) {
			t.Fatalf("%q taken as a connection confirm", b)
		}
	})
}
