package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/rdg"
)

// files writes .rdp files as the gateway does, through gateway addr.
type files struct {
	s    *rdg.Signer
	addr string
}

func (f files) RDPFile(user, node string) ([]byte, string, error) {
	if f.addr == "" {
		return nil, "", admin.ErrNoGatewayAddress
	}
	tok, c, err := f.s.Issue(user, node, 10*time.Minute)
	if err != nil {
		return nil, "", err
	}
	target := "pool"
	if node != "" {
		target = node
	}
	b, err := rdg.File{Target: target, Gateway: f.addr, Token: tok, User: c.User}.Bytes()
	return b, c.ID, err
}

// TestCLIRDPFile: ops write a user's .rdp file; it opens the user's node
// (the token verifies as theirs), names the node asked for, and unknown
// nodes and gateways without the RD Gateway get a clear line.
func TestCLIRDPFile(t *testing.T) {
	b := balancer.New(balancer.Config{}, balancer.Options{})
	b.SetNodes([]balancer.Node{{Name: "node-1", SSH: "192.0.2.1:22", RDP: "192.0.2.1:3389"}})
	signer := &rdg.Signer{Key: []byte(strings.Repeat("k", 32))}
	api, err := admin.New(admin.Config{}, b, admin.Options{RDPFiles: files{signer, "pool.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()

	dir := t.TempDir()
	path := filepath.Join(dir, "a.rdp")
	code, out, errs := runCmd("rdp-file", "Alice", "-o", path, "--admin", srv.URL)
	if code != 0 || !strings.Contains(out, path) {
		t.Fatalf("rdp-file: %d %q %q", code, out, errs)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the file: %v, mode %v; want 0600 (it holds a token)", err, st.Mode())
	}
	f, _ := os.ReadFile(path)
	tok := ""
	for _, line := range strings.Split(string(f), "\r\n") {
		if v, ok := strings.CutPrefix(line, "gatewayaccesstoken:s:"); ok {
			tok = v
		}
	}
	if c, err := signer.Verify(tok); err != nil || c.User != "alice" || c.Node != "" {
		t.Fatalf("the file's token: %+v %v, want alice's", c, err)
	}
	for _, want := range []string{"full address:s:pool\r\n", "gatewayhostname:s:pool.example.com\r\n", "username:s:alice\r\n"} {
		if !strings.Contains(string(f), want) {
			t.Errorf("the file lacks %q:\n%s", want, f)
		}
	}

	code, out, _ = runCmd("rdp-file", "bob", "--node", "node-1", "-o", "-", "--admin", srv.URL)
	if code != 0 || !strings.Contains(out, "full address:s:node-1\r\n") {
		t.Fatalf("rdp-file --node node-1 -o -: %d %q", code, out)
	}
	if code, _, errs = runCmd("rdp-file", "bob", "--node", "node-9", "-o", "-", "--admin", srv.URL); code != 1 || !strings.Contains(errs, "no node named node-9") {
		t.Fatalf("unknown node: %d %q", code, errs)
	}
	if code, _, errs = runCmd("rdp-file", "--admin", srv.URL); code != 2 || !strings.Contains(errs, "name one user") {
		t.Fatalf("no user: %d %q", code, errs)
	}

	off, _ := admin.New(admin.Config{}, b, admin.Options{})
	offSrv := httptest.NewServer(off.Handler())
	defer offSrv.Close()
	if code, _, errs = runCmd("rdp-file", "bob", "-o", "-", "--admin", offSrv.URL); code != 1 || !strings.Contains(errs, "rdp.gateway.enabled") {
		t.Fatalf("gateway off: %d %q", code, errs)
	}
	noAddr, _ := admin.New(admin.Config{}, b, admin.Options{RDPFiles: files{signer, ""}})
	noAddrSrv := httptest.NewServer(noAddr.Handler())
	defer noAddrSrv.Close()
	if code, _, errs = runCmd("rdp-file", "bob", "-o", "-", "--admin", noAddrSrv.URL); code != 1 || !strings.Contains(errs, "rdp.gateway.address") {
		t.Fatalf("no address: %d %q", code, errs)
	}
}
