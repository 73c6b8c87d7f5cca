package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/internal/testutil"
)

// Issue 25's attacks, as an attacker or a user would make them with the
// real OpenSSH client (and curl and the poolgate CLI for the admin API),
// against real sshd nodes behind the gateway.

// The gateway's lines the tests look for.
const (
	lineStarting = "poolgate: no node in the pool is running, so one is being started for you."
	lineNoNode   = "poolgate: no node in the pool can take your session right now"
	lineKeysOnly = "only a login with a key may start one here"
)

// askpass writes a program that ssh runs for its password prompt (with
// SSH_ASKPASS_REQUIRE=force, so no terminal is needed): it appends the
// prompt to the file named by $ASKPASS_LOG and answers password.
func askpass(t *testing.T, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "askpass")
	script := "#!/bin/sh\nprintf '%s\\n' \"$1\" >> \"$ASKPASS_LOG\"\necho '" + password + "'\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// pwClient is one run of the real ssh client logging in by password only.
type pwClient struct {
	cmd     *exec.Cmd
	errb    testutil.SyncBuffer
	out     testutil.SyncBuffer
	prompts string // the askpass log
	done    chan struct{}
	code    int
	took    time.Duration
}

// startPassword starts `ssh -o PreferredAuthentications=password login@gw
// true` with one password prompt answered by prog, bound to source ("" for
// the default address).
func (p *pool) startPassword(prog, login, source string) *pwClient {
	return p.startPasswordBy("password", prog, login, source)
}

// startPasswordBy is startPassword with the given method: password or
// keyboard-interactive.
func (p *pool) startPasswordBy(method, prog, login, source string) *pwClient {
	p.t.Helper()
	c := &pwClient{prompts: filepath.Join(p.t.TempDir(), "prompts"), done: make(chan struct{})}
	args := append([]string{"-o", "LogLevel=INFO"}, p.sshArgs("-p")...)
	args = append(args, "-o", "PreferredAuthentications="+method, "-o", "PubkeyAuthentication=no",
		"-o", "NumberOfPasswordPrompts=1")
	if source != "" {
		args = append(args, "-b", source)
	}
	args = append(args, login+"@127.0.0.1", "true")
	c.cmd = exec.Command("ssh", args...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no terminal: the password comes from askpass
	c.cmd.Env = append(os.Environ(), "SSH_ASKPASS="+prog, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=", "ASKPASS_LOG="+c.prompts)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.errb
	began := time.Now()
	if err := c.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	go func() {
		err := c.cmd.Wait()
		c.took = time.Since(began)
		c.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			c.code = ee.ExitCode()
		} else if err != nil {
			c.code = -1
		}
		close(c.done)
	}()
	p.t.Cleanup(func() { c.stop() })
	return c
}

// stop ends the client if it still runs.
func (c *pwClient) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// wait waits up to d for the client to exit, and reports whether it did.
func (c *pwClient) wait(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// askedPassword reports the prompts the client showed.
func (c *pwClient) askedPassword() string {
	b, _ := os.ReadFile(c.prompts)
	return string(b)
}

// passwordLogin runs startPassword to the end (at most 30 s).
func (p *pool) passwordLogin(prog, login, source string) *pwClient {
	p.t.Helper()
	return p.passwordLoginBy("password", prog, login, source)
}

// passwordLoginBy runs startPasswordBy to the end (at most 30 s).
func (p *pool) passwordLoginBy(method, prog, login, source string) *pwClient {
	p.t.Helper()
	c := p.startPasswordBy(method, prog, login, source)
	if !c.wait(30 * time.Second) {
		c.stop()
		p.t.Fatalf("ssh %s (password) from %q still ran after 30s; stderr %q", login, source, c.errb.String())
	}
	return c
}

// TestAttackPasswordStartsAreBounded is issue 25 item 1 with the real
// OpenSSH client: with scale_from_zero true, password logins with a wrong
// password for a user that does not exist start (or wait for) a node only
// within the bound, one per client address and three in all per
// start_timeout; the others get the usual no-node line at once. With
// keys_only, a password login starts nothing and a key login does.
func TestAttackPasswordStartsAreBounded(t *testing.T) {
	t.Run("true", func(t *testing.T) {
		w := azuretest.New() // an empty scale set: the pool is at zero
		p := azurePool(t, w, -1, func(c *app.Config) { c.Discovery.Azure.ScaleFromZero = "true" })
		prog := askpass(t, "wrong-password")

		// The first attacker, from 127.0.0.1, is told a node is starting
		// and waits for it.
		waiting := []*pwClient{p.startPassword(prog, "nosuch", "")}
		told := func(c *pwClient, what string) {
			t.Helper()
			testutil.Eventually(t, 15*time.Second, what+" told a node is starting", func() bool {
				return strings.Contains(c.errb.String(), lineStarting)
			})
		}
		told(waiting[0], "the first password login from 127.0.0.1")

		refusedAtOnce := func(source string, method ...string) {
			t.Helper()
			c := p.passwordLoginBy(append(method, "password")[0], prog, "nosuch", source)
			errs := c.errb.String()
			if c.code != 255 || !strings.Contains(errs, lineNoNode) || strings.Contains(errs, lineStarting) || c.took > 10*time.Second {
				t.Errorf("a password login from %s beyond the bound: exit %d after %s, stderr %q; want 255 at once with %q and no start",
					orDefault(source), c.code, c.took.Round(time.Millisecond), errs, lineNoNode)
			}
		}
		// The same address again: refused at once, no second wait.
		refusedAtOnce("")
		// Two more addresses reach the bound in all (3)...
		for _, src := range []string{"127.0.0.5", "127.0.0.6"} {
			c := p.startPassword(prog, "nosuch", src)
			told(c, "a password login from "+src)
			waiting = append(waiting, c)
		}
		// ...and a fourth address is refused at once, by password or
		// keyboard-interactive.
		refusedAtOnce("127.0.0.7")
		refusedAtOnce("127.0.0.8", "keyboard-interactive")
		if got := w.CapacityRaises(); len(got) != 1 {
			t.Errorf("capacity raises %v, want one start for all the password logins", got)
		}

		// The node comes up: the waiting logins reach it, and it refuses
		// their password; nobody got a session.
		w.Add(vmFor(0))
		for i, c := range waiting {
			if !c.wait(40 * time.Second) {
				t.Fatalf("waiting password login %d still runs 40s after the node was added; stderr %q", i, c.errb.String())
			}
			if errs := c.errb.String(); c.code != 255 || !strings.Contains(errs, "node node-1 has started") || !strings.Contains(errs, "Permission denied") {
				t.Errorf("waiting password login %d: exit %d, stderr %q; want the start, then the node's refusal of the password", i, c.code, errs)
			}
		}
		if n := p.sessionsOf("nosuch"); n != 0 {
			t.Errorf("%d sessions for nosuch", n)
		}
		if got := w.CapacityRaises(); len(got) != 1 {
			t.Errorf("capacity raises %v, want exactly one", got)
		}
	})

	t.Run("keys_only", func(t *testing.T) {
		w := azuretest.New()
		w.OnCapacity = func(int64) {
			go func() { time.Sleep(500 * time.Millisecond); w.Add(vmFor(0)) }()
		}
		p := azurePool(t, w, -1, func(c *app.Config) { c.Discovery.Azure.ScaleFromZero = "keys_only" })
		prog := askpass(t, "wrong-password")
		c := p.passwordLogin(prog, "nosuch", "")
		if errs := c.errb.String(); c.code != 255 || !strings.Contains(errs, lineKeysOnly) || strings.Contains(errs, lineStarting) {
			t.Errorf("password login with keys_only: exit %d, stderr %q; want 255 and %q", c.code, errs, lineKeysOnly)
		}
		// The correct password of a real user starts nothing either.
		c = p.passwordLogin(askpass(t, "pat-secret-1"), "pat", "")
		if errs := c.errb.String(); c.code != 255 || !strings.Contains(errs, lineKeysOnly) {
			t.Errorf("pat's right password with keys_only: exit %d, stderr %q; want 255 and %q", c.code, errs, lineKeysOnly)
		}
		if got := w.CapacityRaises(); len(got) != 0 {
			t.Fatalf("password logins with keys_only raised the capacity: %v", got)
		}
		out, errs, code := p.sshCmd("alice", `echo "$DSVM_NODE"`)
		if code != 0 || strings.TrimSpace(out) != "node-1" || !strings.Contains(errs, lineStarting) {
			t.Errorf("alice's key login with keys_only: exit %d, out %q, stderr %q; want a start and a login on node-1", code, out, errs)
		}
		if got := w.CapacityRaises(); len(got) != 1 {
			t.Errorf("capacity raises %v, want one, for alice's key", got)
		}
	})
}

func orDefault(source string) string {
	if source == "" {
		return "127.0.0.1"
	}
	return source
}

// loopbackUnslowed lets the loopback addresses fail logins without the
// auth backoff's delays: these tests fail many on purpose.
func loopbackUnslowed(c *app.Config) { c.SSH.AuthBackoff.Allow = []string{"127.0.0.0/8"} }

// TestAttackChosenNodeTellsNothingBeforeAuth is issue 25 item 3 with the
// real OpenSSH client: a password login naming a node that exists and is
// up, one that does not exist, and one being drained get the same answer
// before authentication (a password prompt, the same failure, the same
// exit status, no poolgate: line), as does a plain login the node refuses.
// A user proven by key is told why she cannot choose the node.
func TestAttackChosenNodeTellsNothingBeforeAuth(t *testing.T) {
	p := newPool(t, poolOptions{cfg: loopbackUnslowed})
	resp, err := http.Post("http://"+p.gw.AdminAddr()+"/api/nodes/node-3/drain", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("drain node-3: %s", resp.Status)
	}
	const signed = `poolgate_ca_signatures_total{result="ok"}`
	signedBefore := p.metric(signed)
	prog := askpass(t, "wrong-password")
	// Connect once so that the known_hosts line is not in the answers.
	p.passwordLogin(prog, "nosuch", "")

	answers := map[string]string{}
	for _, login := range []string{"nosuch", "nosuch+node-2", "nosuch+nonexistent", "nosuch+node-3", "pat+node-3", "pat+nonexistent"} {
		c := p.passwordLogin(prog, login, "")
		prompts := c.askedPassword()
		if strings.Count(prompts, "password:") != 1 {
			t.Errorf("ssh %s: the client showed prompts %q; want one password prompt", login, prompts)
		}
		t.Logf("ssh %s with a wrong password: exit %d after %s", login, c.code, c.took.Round(time.Millisecond))
		errs := c.errb.String()
		if strings.Contains(errs, "poolgate:") {
			t.Errorf("ssh %s with a wrong password was told something by the gateway before authentication: %q", login, errs)
		}
		answers[login] = fmt.Sprintf("exit %d; prompts %q; stdout %q; stderr %q", c.code,
			strings.ReplaceAll(prompts, login, "LOGIN"), c.out.String(), strings.ReplaceAll(strings.ReplaceAll(errs, login, "LOGIN"), p.port(), "PORT"))
	}
	want := answers["nosuch"]
	if !strings.Contains(want, "exit 255") || !strings.Contains(want, "Permission denied") {
		t.Fatalf("a wrong password for nosuch: %s; want exit 255 and Permission denied", want)
	}
	for login, got := range answers {
		if got != want {
			t.Errorf("before authentication, %s is answered otherwise than a wrong password a node refused:\n%s: %s\nnosuch: %s", login, login, got, want)
		}
	}

	// pat's right password logs him in; no password login, right or
	// wrong, cost a signature by the user CA.
	if c := p.passwordLogin(askpass(t, "pat-secret-1"), "pat", ""); c.code != 0 {
		t.Errorf("pat's right password: exit %d, stderr %q", c.code, c.errb.String())
	}
	if n := p.metric(signed) - signedBefore; n != 0 {
		t.Errorf("password logins moved %s by %v; want 0", signed, n)
	}

	// Proven by her key, alice is told why.
	args := append([]string{"-o", "LogLevel=INFO"}, p.sshArgs("-p")...)
	for login, why := range map[string]string{
		"alice+nonexistent": "poolgate: you cannot choose node nonexistent now: it is not in the pool.",
		"alice+node-3":      "poolgate: you cannot choose node node-3 now: it is being drained and takes no new users.",
	} {
		_, errs, code := p.runClient("ssh", append(args, "-o", "BatchMode=yes", login+"@127.0.0.1", "true"), nil)
		if code != 255 || !strings.Contains(errs, why) {
			t.Errorf("ssh %s by key: exit %d, stderr %q; want 255 and %q", login, code, errs, why)
		}
	}
}

// TestAttackAuthorizedKeysFirstEntryWins is issue 25 item 5 with the real
// OpenSSH client: the entry of alice's authorized_keys that sshd would use
// is the one poolgate uses. When it carries an option poolgate cannot
// enforce, a later unrestricted line for the same key does not let her in:
// she gets the line a key that is not there gets. An expired entry is
// passed over (refused alone, a later line used), an unexpired one used.
func TestAttackAuthorizedKeysFirstEntryWins(t *testing.T) {
	p := newPool(t, poolOptions{nodes: 1, cfg: loopbackUnslowed})
	pub, err := os.ReadFile(p.key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
	otherPub, _ := os.ReadFile(other + ".pub")
	key := strings.TrimSpace(string(pub))
	file := filepath.Join(p.dir, "keys", "alice", "authorized_keys")
	login := func(content string) (string, int) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"-o", "LogLevel=INFO"}, p.sshArgs("-p")...)
		out, errs, code := p.runClient("ssh", append(args, "-o", "BatchMode=yes", "alice@127.0.0.1", `echo "$DSVM_NODE"`), nil)
		if code == 0 && strings.TrimSpace(out) != "node-1" {
			t.Fatalf("alice logged in but printed %q", out)
		}
		var lines []string
		for _, l := range strings.Split(errs, "\n") {
			if strings.HasPrefix(l, "poolgate:") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n"), code
	}
	usual, code := login(string(otherPub))
	if code != 255 || !strings.Contains(usual, "is not authorized for alice") {
		t.Fatalf("a key not in authorized_keys: exit %d, %q; want 255 and the not-authorized line", code, usual)
	}
	for _, tc := range []struct {
		name, file string
		in         bool
	}{
		{"permitlisten first", `permitlisten="localhost:8080" ` + key + "\n" + key + "\n", false},
		{"environment first", `environment="EDITOR=vi" ` + key + "\n" + key + "\n", false},
		{"expired", `expiry-time="20200101" ` + key + "\n", false},
		{"expired then plain", `expiry-time="20200101" ` + key + "\n" + key + "\n", true},
		{"not yet expired", `expiry-time="20991231" ` + key + "\n", true},
		{"plain", key + "\n", true},
	} {
		got, code := login(tc.file)
		switch {
		case tc.in && code != 0:
			t.Errorf("%s: alice refused (exit %d, %q); sshd would use the entry", tc.name, code, got)
		case !tc.in && (code != 255 || got != usual):
			t.Errorf("%s: exit %d, lines %q; want 255 and the usual refusal %q", tc.name, code, got, usual)
		}
	}
}

// metric reads one sample of the gateway's /metrics, by its name and
// labels as exposed (poolgate_ca_signatures_total{result="ok"}); 0 when
// absent.
func (p *pool) metric(sample string) float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + p.gw.AdminAddr() + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				p.t.Fatalf("/metrics: %q", sc.Text())
			}
			return f
		}
	}
	return 0
}

// TestAttackOneUserCannotSpendTheSignatures is issue 25 item 6 with the
// real OpenSSH client: five logins of alice with one key cost one
// signature by the user CA (/metrics counts 1 signed, 4 reused); bob, who
// logs in with a new key each time, gets a clear line past
// ssh.signatures_per_user_per_minute, while his first key (reused) and
// alice still log in.
func TestAttackOneUserCannotSpendTheSignatures(t *testing.T) {
	const perMinute = 3
	p := newPool(t, poolOptions{nodes: 1, cfg: func(c *app.Config) { c.SSH.SignaturesPerUserPerMinute = perMinute }})
	const (
		signed  = `poolgate_ca_signatures_total{result="ok"}`
		reused  = `poolgate_ca_signatures_reused_total`
		limited = `poolgate_login_refusals_total{protocol="ssh",reason="signature_limit"}`
	)
	before := map[string]float64{signed: p.metric(signed), reused: p.metric(reused), limited: p.metric(limited)}
	delta := func(name string) float64 { return p.metric(name) - before[name] }

	for i := range 5 {
		if out, errs, code := p.sshCmd("alice", `echo "$DSVM_NODE"`); code != 0 || strings.TrimSpace(out) != "node-1" {
			t.Fatalf("alice's login %d: exit %d, out %q, stderr %q", i+1, code, out, errs)
		}
	}
	if s, r := delta(signed), delta(reused); s != 1 || r != 4 {
		t.Errorf("after alice's 5 logins with one key: %s +%v, %s +%v; want +1 and +4", signed, s, reused, r)
	}

	// bob has perMinute+1 keys and uses a new one each login.
	var keys []string
	var authorized strings.Builder
	for i := range perMinute + 1 {
		k := filepath.Join(t.TempDir(), fmt.Sprintf("bob%d", i))
		run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k)
		pub, _ := os.ReadFile(k + ".pub")
		authorized.Write(pub)
		keys = append(keys, k)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "keys", "bob", "authorized_keys"), []byte(authorized.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bob := func(key string) (string, int) {
		t.Helper()
		args := append([]string{"-o", "LogLevel=INFO"}, clientArgs(p.dir, key, p.entry, "-p")...)
		out, errs, code := p.runClient("ssh", append(args, "-o", "BatchMode=yes", "bob@127.0.0.1", `echo "$DSVM_NODE"`), nil)
		if code == 0 && strings.TrimSpace(out) != "node-1" {
			t.Fatalf("bob printed %q", out)
		}
		return errs, code
	}
	for i, k := range keys[:perMinute] {
		if errs, code := bob(k); code != 0 {
			t.Fatalf("bob's login %d with a new key: exit %d, stderr %q", i+1, code, errs)
		}
	}
	want := fmt.Sprintf("poolgate: too many logins for bob in the last minute (the gateway signs at most %d node logins a minute per user); please wait a minute and try again.", perMinute)
	if errs, code := bob(keys[perMinute]); code != 255 || !strings.Contains(errs, want) {
		t.Errorf("bob's login with new key number %d within the minute: exit %d, stderr %q; want 255 and %q", perMinute+1, code, errs, want)
	}
	if errs, code := bob(keys[0]); code != 0 {
		t.Errorf("bob's first key again (its certificate is reused): exit %d, stderr %q", code, errs)
	}
	if _, errs, code := p.sshCmd("alice", "true"); code != 0 {
		t.Errorf("alice while bob is at his limit: exit %d, stderr %q", code, errs)
	}
	if s, r, l := delta(signed), delta(reused), delta(limited); s != 1+perMinute || r != 4+2 || l != 1 {
		t.Errorf("in all: %s +%v, %s +%v, %s +%v; want +%d, +6, +1", signed, s, reused, r, limited, l, 1+perMinute)
	}
}

// controls returns the control characters in s other than newline and
// tab, quoted, or "" when there are none.
func controls(s string) string {
	var bad []rune
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			bad = append(bad, r)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return strconv.QuoteToASCII(string(bad))
}

// TestAttackAdminNamesAndCLIOutput is issue 25 item 4 with curl and the
// poolgate CLI as an operator runs them against the gateway's admin API:
// a pin for a user name with an escape sequence is 400, saying what is
// wrong, and pins no one; the CLI asked to pin one, or to list sessions,
// writes no control character to the terminal.
func TestAttackAdminNamesAndCLIOutput(t *testing.T) {
	requirePeers(t, "curl")
	p := newPool(t, poolOptions{nodes: 1})
	alice := p.hold("alice")
	defer alice.close()
	for _, name := range []string{"al%1B%5B31mice", "alice%1B%5D0%3Bowned%07", "%1B%5B2J"} {
		body := filepath.Join(t.TempDir(), "body")
		out, err := exec.Command("curl", "-sS", "-o", body, "-w", "%{http_code}", "-X", "POST",
			"-H", "Content-Type: application/json", "--data", `{"node": "node-1"}`,
			"http://"+p.gw.AdminAddr()+"/api/users/"+name+"/pin").CombinedOutput()
		answer, _ := os.ReadFile(body)
		if err != nil || string(out) != "400" || !strings.Contains(string(answer), `character '\\x1b'`) {
			t.Errorf("curl -X POST /api/users/%s/pin: %v, status %q, body %q; want 400 naming the character '\\x1b'", name, err, out, answer)
		}
	}
	var pins struct {
		Pins []struct{ User string } `json:"pins"`
	}
	getJSON(t, "http://"+p.gw.AdminAddr()+"/api/pins", &pins)
	for _, pin := range pins.Pins {
		if pin.User != "alice" {
			t.Errorf("/api/pins holds a pin for %q", pin.User)
		}
	}

	bin := buildPoolgate(t)
	cli := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--admin", "http://"+p.gw.AdminAddr())...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	out, code := cli("pin", "al\x1b[31mice", "node-1")
	if code == 0 || !strings.Contains(out, `character '\x1b' at position 3`) || controls(out) != "" {
		t.Errorf("poolgate pin 'al\\x1b[31mice' node-1: exit %d, output %q; want a failure naming the character, with no control character written", code, out)
	}
	out, code = cli("sessions")
	if code != 0 || !strings.Contains(out, "alice") || controls(out) != "" {
		t.Errorf("poolgate sessions: exit %d, control characters %s, output %q", code, controls(out), out)
	}
}

// TestAttackLoadScraperStaysOnItsAddress is issue 25 item 2 against the
// running gateway: what answers on node-1's metrics port (a user's
// process where node_exporter is not running) redirects every scrape to
// the gateway's own admin API, reached here through a counting proxy. The
// gateway keeps asking node-1's port, never the admin API, and node-1 has
// no load figures in /api/nodes.
func TestAttackLoadScraperStaysOnItsAddress(t *testing.T) {
	var toAdmin, scrapes atomic.Int64
	var adminURL atomic.Pointer[url.URL]
	toAdminProxy := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(adminURL.Load()) },
		Transport: &http.Transport{},
	}
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		toAdmin.Add(1)
		toAdminProxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { admin.Close(); toAdminProxy.Transport.(*http.Transport).CloseIdleConnections() })
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	exporter := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scrapes.Add(1)
		http.Redirect(w, r, admin.URL+"/api/nodes", http.StatusFound)
	})}
	go func() { _ = exporter.Serve(ln) }()
	t.Cleanup(func() { _ = exporter.Close() })

	const interval = 200 * time.Millisecond
	p := newPool(t, poolOptions{nodes: 1, cfg: func(c *app.Config) {
		c.Load.Interval = interval
		c.Discovery.Static[0].Metrics = ln.Addr().String()
	}})
	u, _ := url.Parse("http://" + p.gw.AdminAddr())
	adminURL.Store(u)
	p.waitFor("five scrapes of node-1's metrics port", func() bool { return scrapes.Load() >= 5 })
	if n := toAdmin.Load(); n != 0 {
		t.Errorf("the gateway followed node-1's redirect to its admin API %d times", n)
	}
	l := apiLoads(t, p)["node-1"]
	if l.CPU != nil || l.Memory != nil || l.Updated != nil {
		t.Errorf("node-1's load in /api/nodes from a redirecting exporter: %+v; want no figures", l)
	}
	// The refused redirect is node-1's scrape error, naming where it
	// pointed, in /api/nodes and in poolgate nodes.
	want := `node_exporter: GET /metrics: 302 Found: redirect to "` + admin.URL + `/api/nodes" not followed`
	if !strings.Contains(l.Error, want) {
		t.Errorf("node-1's load error in /api/nodes is %q, want one containing %q", l.Error, want)
	}
	out, err := runOut(buildPoolgate(t), "nodes", "--admin", "http://"+p.gw.AdminAddr())
	if err != nil || !strings.Contains(out, "Load scrape failing") || !strings.Contains(out, "  node-1: "+want) {
		t.Errorf("poolgate nodes does not show node-1's scrape error (%v):\n%s", err, out)
	}
	if n := toAdmin.Load(); n != 0 {
		t.Errorf("the gateway followed node-1's redirect to its admin API %d times", n)
	}
}
