package sshgw

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/keyvault"
	"github.com/poolgate/poolgate/gateway/keyvault/keyvaulttest"
)

// kvCA opens a P-256 CA key in a fake Key Vault.
func kvCA(t *testing.T) (*keyvaulttest.Vault, ssh.Signer) {
	t.Helper()
	v := keyvaulttest.New()
	v.AddKey("poolgate-user-ca", keyvaulttest.P256(t))
	s, err := keyvault.Open(context.Background(), v.URL, "poolgate-user-ca", "",
		keyvault.Options{Credential: keyvaulttest.Credential(), Transport: v.Transport(), Budget: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := s.SSHSigner()
	if err != nil {
		t.Fatal(err)
	}
	return v, ca
}

// caGW runs a gateway whose user CA is ca (nil: the file CA) in front of
// the given nodes (addresses; "" starts a testNode trusting the CA).
func caGW(t *testing.T, ca ssh.Signer, log *zap.Logger, nodes ...string) *testGW {
	t.Helper()
	var starts []func(ssh.PublicKey) string
	for _, addr := range nodes {
		if addr == "" {
			starts = append(starts, func(ca ssh.PublicKey) string { return testNode(t, ca) })
		} else {
			starts = append(starts, func(ssh.PublicKey) string { return addr })
		}
	}
	return startTestGW(t, testGWOptions{ca: ca, log: log, nodes: starts})
}

// login logs in as user and runs a command, returning the banner.
func login(t *testing.T, g *testGW, user string) (string, error) {
	t.Helper()
	c, banner, err := dialBanner(g.addr, user, g.userKey)
	if err != nil {
		return banner, err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return banner, err
	}
	defer s.Close()
	if out, err := s.Output("exit 0"); err != nil {
		return banner, errors.New(string(out) + err.Error())
	}
	return banner, nil
}

func TestKeyVaultLoginSignsThroughTheVault(t *testing.T) {
	v, ca := kvCA(t)
	g := caGW(t, ca, nil, "")
	for i := 0; i < 3; i++ {
		if banner, err := login(t, g, "alice"); err != nil {
			t.Fatalf("login with the CA in Key Vault: %v (banner %q)", err, banner)
		}
	}
	if n := v.Calls(keyvaulttest.Sign); n != 1 {
		t.Errorf("%d Key Vault signatures for 3 logins, want 1 (the certificate is reused)", n)
	}
}

func TestKeyVaultFailureTellsTheUserAndTheLog(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
	}{{"429", http.StatusTooManyRequests}, {"503", http.StatusServiceUnavailable}} {
		t.Run(tt.name, func(t *testing.T) {
			v, ca := kvCA(t)
			core, logs := observer.New(zap.InfoLevel)
			g := caGW(t, ca, zap.New(core), "")
			v.Fail(keyvaulttest.Sign, tt.status, 0, -1)
			banner, err := login(t, g, "alice")
			if err == nil {
				t.Fatal("logged in while Key Vault fails")
			}
			if !strings.Contains(banner, "poolgate: the gateway could not sign your login") {
				t.Errorf("banner %q, want the poolgate: line", banner)
			}
			entries := logs.FilterMessageSnippet("signing the node login certificate failed").All()
			if len(entries) != 1 || entries[0].Level != zap.ErrorLevel {
				t.Fatalf("log: %v", logs.All())
			}
			if e := entries[0].ContextMap()["error"]; !strings.Contains(e.(string), tt.name) || !strings.Contains(e.(string), "poolgate-user-ca") {
				t.Errorf("logged error %q does not say what failed", e)
			}
			if n := g.bal.UserSessions("alice"); n != 0 {
				t.Errorf("a failed login left %d sessions", n)
			}
			v.Recover()
			if banner, err := login(t, g, "alice"); err != nil {
				t.Errorf("after Key Vault recovered: %v (banner %q)", err, banner)
			}
		})
	}
}

// TestKeyVaultOneSignaturePerLogin: a login that tries an unreachable node
// first signs once, not once per node.
func TestKeyVaultOneSignaturePerLogin(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	v, ca := kvCA(t)
	g := caGW(t, ca, nil, deadAddr, "")
	// bob on n2 makes the dead n1 the least loaded: alice tries it first.
	lease, err := g.bal.Acquire("bob", balancer.SSH, "192.0.2.1:1", "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	if banner, err := login(t, g, "alice"); err != nil {
		t.Fatalf("login: %v (banner %q)", err, banner)
	}
	if n := v.Calls(keyvaulttest.Sign); n != 1 {
		t.Errorf("%d Key Vault signatures for one login over two nodes, want 1", n)
	}
}

// TestKeyVaultLoginTime measures logins with the file CA and with the CA
// in Key Vault (the SDK's fake, in process: the gateway's own cost, with
// no network), interleaved, and logs the ratio. No timed assertion.
func TestKeyVaultLoginTime(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	v, ca := kvCA(t)
	file := caGW(t, nil, nil, "")
	kv := caGW(t, ca, nil, "")
	const rounds = 20
	var mu sync.Mutex
	took := map[string]time.Duration{}
	for i := 0; i < rounds; i++ {
		for name, g := range map[string]*testGW{"file": file, "keyvault": kv} {
			start := time.Now()
			if _, err := login(t, g, "alice"); err != nil {
				t.Fatalf("%s CA login: %v", name, err)
			}
			mu.Lock()
			took[name] += time.Since(start)
			mu.Unlock()
		}
	}
	f, k := took["file"]/rounds, took["keyvault"]/rounds
	t.Logf("login (connect, authenticate, node login, one command): file CA %s, Key Vault CA (fake) %s, ratio %.2f; %d Key Vault round trips for %d logins",
		f.Round(10*time.Microsecond), k.Round(10*time.Microsecond), float64(k)/float64(f), v.Calls(keyvaulttest.Sign), rounds)
}
