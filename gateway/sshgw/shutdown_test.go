package sshgw

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testutil"
)

// gatedNode puts a proxy in front of a test node that holds every
// connection until gate is closed: the gateway's login to the node, and
// so the user's, is held just before it finishes. arrived, if not nil,
// hears of each connection held.
func gatedNode(t *testing.T, ca ssh.PublicKey, gate <-chan struct{}, arrived chan<- struct{}) string {
	node := testNode(t, ca)
	return testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) {
		if arrived != nil {
			select {
			case arrived <- struct{}{}:
			default:
			}
		}
		<-gate
		n, err := net.Dial("tcp", node)
		if err != nil {
			return
		}
		defer n.Close()
		go func() { _, _ = io.Copy(n, c); n.Close() }()
		_, _ = io.Copy(c, n)
	})
}

// TestShutdownTellsLoginsThatFinishLate: a user whose login is just
// finishing when Shutdown begins (already counted: their lease is taken)
// gets the notice and the grace like everyone else, not a silent cut, and
// the log has both of the session's lines.
func TestShutdownTellsLoginsThatFinishLate(t *testing.T) {
	gate := make(chan struct{})
	g := newTestGW(t, nil, func(ca ssh.PublicKey) string { return gatedNode(t, ca, gate, nil) })
	type result struct {
		stderr string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
			User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(g.userKey)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
		})
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			res <- result{err: err}
			return
		}
		var stderr testutil.SyncBuffer
		s.Stderr = &stderr
		in, _ := s.StdinPipe()
		defer in.Close()
		if err := s.Start("cat"); err != nil {
			res <- result{err: err}
			return
		}
		_ = s.Wait()
		res <- result{stderr: stderr.String()}
	}()
	testutil.Eventually(t, 5*time.Second, "alice's lease (her login under way)", func() bool { return g.bal.UserSessions("alice") == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- g.srv.Shutdown(ctx) }()
	testutil.Eventually(t, 5*time.Second, "the gateway to stop accepting", func() bool {
		c, err := net.DialTimeout("tcp", g.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(gate) // the node answers: alice's login finishes during the shutdown
	r := <-res
	<-shut
	if r.err != nil {
		t.Fatalf("alice's login, finished during the shutdown: %v", r.err)
	}
	if !strings.Contains(r.stderr, "the gateway is shutting down") {
		t.Fatalf("alice was not told why her connection closed: stderr %q", r.stderr)
	}
	started := g.logs.FilterMessage("ssh session started").FilterField(zapUser("alice")).Len()
	ended := g.logs.FilterMessage("ssh session ended").FilterField(zapUser("alice")).Len()
	if started != 1 || ended != 1 {
		t.Fatalf("log lines for alice's session: %d started, %d ended; want one each", started, ended)
	}
}

func zapUser(u string) zap.Field { return zap.String("user", u) }
