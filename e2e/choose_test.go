package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/internal/testutil"
)

// TestChooseYourNode is issue 16's acceptance with the real OpenSSH
// client, scp and sftp: alice names her node, her plain logins follow her
// choice, bad choices get a poolgate: line and exit 255, and ops pins
// move bob until unpinned.
func TestChooseYourNode(t *testing.T) {
	p := newPool(t, poolOptions{})
	where := func(login string) string {
		t.Helper()
		out, errs, code := p.sshCmd(login, `echo "$DSVM_NODE"; id -un`)
		if code != 0 {
			t.Fatalf("ssh %s: exit %d: %s", login, code, errs)
		}
		f := strings.Fields(out)
		if len(f) != 2 {
			t.Fatalf("ssh %s printed %q", login, out)
		}
		if f[1] != strings.SplitN(login, "+", 2)[0] {
			t.Fatalf("ssh %s ran as %s on the node", login, f[1])
		}
		return f[0]
	}
	if got := where("alice+node-3"); got != "node-3" {
		t.Fatalf("alice+node-3 landed on %s", got)
	}
	held := p.hold("alice+node-3") // a session on node-3 that must not be cut
	if got := where("alice+node-2"); got != "node-2" {
		t.Fatalf("alice+node-2 landed on %s", got)
	}
	if got := where("alice"); got != "node-2" {
		t.Fatalf("alice's plain login after choosing node-2 landed on %s", got)
	}
	if _, err := held.stdin.Write([]byte("still here\n")); err != nil {
		t.Fatalf("alice's session on node-3 was cut by her choice of node-2: %v", err)
	}
	if line, err := held.out.ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("alice's session on node-3 after her choice of node-2: %q %v", line, err)
	}
	held.close()

	// scp and sftp with a chosen node.
	src := filepath.Join(t.TempDir(), "up.txt")
	if err := os.WriteFile(src, []byte("chosen\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/home/alice/poolgate-choose.txt") })
	scpArgs := append(p.sshArgs("-P"), "-o", "BatchMode=yes", "-q", src, "alice+node-3@127.0.0.1:poolgate-choose.txt")
	if out, errs, code := p.runClient("scp", scpArgs, nil); code != 0 {
		t.Fatalf("scp to alice+node-3: exit %d: %s %s", code, out, errs)
	}
	sftpArgs := append(p.sshArgs("-P"), "-o", "BatchMode=yes", "-b", "-", "alice+node-3@127.0.0.1")
	out, errs, code := p.runClient("sftp", sftpArgs, strings.NewReader("get poolgate-choose.txt "+filepath.Join(t.TempDir(), "down.txt")+"\nls poolgate-choose.txt\n"))
	if code != 0 || !strings.Contains(out, "poolgate-choose.txt") {
		t.Fatalf("sftp with alice+node-3: exit %d: %s %s", code, out, errs)
	}
	if got := where("alice"); got != "node-3" {
		t.Fatalf("alice after scp and sftp to node-3 landed on %s", got)
	}

	// Bad choices: a poolgate: line and exit 255.
	refused := func(login, want string) {
		t.Helper()
		args := append([]string{"-o", "LogLevel=INFO"}, p.sshArgs("-p")...)
		args = append(args, "-o", "BatchMode=yes", login+"@127.0.0.1", "true")
		_, errs, code := p.runClient("ssh", args, nil)
		if code != 255 || !strings.Contains(errs, "poolgate: ") || !strings.Contains(errs, want) {
			t.Fatalf("ssh %s: exit %d, stderr %q; want 255 and %q", login, code, errs, want)
		}
	}
	refused("alice+node-9", "you cannot choose node node-9 now: it is not in the pool. Nodes you can choose: node-1, node-2, node-3.")
	bin := buildPoolgate(t)
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--admin", "http://"+p.gw.AdminAddr())...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("poolgate %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cli("drain", "node-1")
	refused("carol+node-1", "node-1 now: it is being drained")

	// Ops pin bob to node-2: his next three logins land there; unpinned,
	// he is placed by load again (node-3 then has fewer sessions than
	// node-2, which holds a session of dave's).
	cli("undrain", "node-1")
	dave := p.hold("dave+node-2")
	defer dave.close()
	cli("pin", "bob", "node-2")
	for range 3 {
		if got := where("bob"); got != "node-2" {
			t.Fatalf("bob, pinned to node-2 by ops, landed on %s", got)
		}
	}
	if out := cli("sessions"); !regexpMatch(out, `bob\s+node-2\s+ops`) || !regexpMatch(out, `dave\s+node-2\s+user`) {
		t.Fatalf("poolgate sessions does not show who chose the pins:\n%s", out)
	}
	checkDashboardPins(t, p, map[string]string{"bob": "ops (poolgate pin)", "dave": "the user (dave+node-2)"})
	cli("unpin", "bob")
	testutil.Eventually(t, 10*time.Second, "bob placed by load after the unpin", func() bool { return where("bob") != "node-2" })
}

func regexpMatch(text, re string) bool { return regexp.MustCompile(re).MatchString(text) }

// TestChoiceFollowedAcrossGateways: a node chosen through one gateway is
// where the user's plain logins go through the other (shared state).
func TestChoiceFollowedAcrossGateways(t *testing.T) {
	sp := newSharedPool(t, []string{"alice"})
	a, b := sp.start("gw-a"), sp.start("gw-b")
	first := sp.nodeOf(a, "alice")
	other := "node-1"
	if first == other {
		other = "node-2"
	}
	if got := sp.nodeOf(a, "alice+"+other); got != other {
		t.Fatalf("alice+%s through A landed on %s", other, got)
	}
	testutil.Eventually(t, 10*time.Second, "B to follow alice's choice of "+other, func() bool { return sp.nodeOf(b, "alice") == other })
}

// checkDashboardPins opens the dashboard in headless Chromium and checks
// the pins table says who chose each user's node.
func checkDashboardPins(t *testing.T, p *pool, want map[string]string) {
	t.Helper()
	requirePeers(t, "chromium")
	ctx, cancel := context.WithTimeout(newBrowser(t, "").root, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+p.gw.AdminAddr()+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-node="node-1"]`))); err != nil {
		t.Fatalf("opening the dashboard: %v", err)
	}
	for user, by := range want {
		js := fmt.Sprintf(`(() => { const e = document.querySelector('tr[data-pin="%s"] td.pin-by'); return e ? e.innerText : "" })()`, user)
		testutil.Eventually(t, 20*time.Second, user+"'s pin on the dashboard chosen by "+by, func() bool {
			s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
			return err == nil && strings.TrimSpace(s) == by
		})
	}
}
