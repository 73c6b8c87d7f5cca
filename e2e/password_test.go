package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// TestPasswordGuessesLeaveNothing: with password pass-through, wrong
// passwords count no session and answer the same whether the user exists,
// is connected up to their session limit, or does not exist.
func TestPasswordGuessesLeaveNothing(t *testing.T) {
	p := newPool(t, poolOptions{nodes: 2, cfg: func(c *app.Config) { c.SSH.MaxSessionsPerUser = 1 }})
	p.hold("alice") // alice is at her limit of one connection
	startedBefore := p.gw.Balancer().Started(balancer.SSH)

	answers := map[string]string{}
	for _, user := range []string{"alice", "bob", "nosuchuser"} {
		args := append([]string{"-p", "wrong-password", "ssh", "-o", "LogLevel=INFO"}, p.sshArgs("-p")...)
		args = append(args, "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
			"-o", "NumberOfPasswordPrompts=1", user+"@127.0.0.1", "true")
		cmd := exec.Command("sshpass", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("a wrong password logged in as %s", user)
		}
		// The client's own lines name the port it used; only the user's
		// name may differ from one answer to the next.
		answers[user] = strings.ReplaceAll(strings.ReplaceAll(string(out), user, "USER"), p.port(), "PORT")
	}
	for _, user := range []string{"alice", "nosuchuser"} {
		if answers[user] != answers["bob"] {
			t.Errorf("a wrong password for %s is answered otherwise than for bob, telling who exists or is connected:\n%s: %q\nbob: %q",
				user, user, answers[user], answers["bob"])
		}
	}
	if got := p.gw.Balancer().Started(balancer.SSH) - startedBefore; got != 0 {
		t.Errorf("3 wrong passwords counted %d SSH sessions started (poolgate_sessions_started_total); want 0", got)
	}
	if n := p.sessionsOf("bob") + p.sessionsOf("nosuchuser"); n != 0 {
		t.Errorf("%d sessions left for bob and nosuchuser after wrong passwords", n)
	}
}

// kbdintScript logs in with keyboard-interactive and reports what the
// gateway asked: the name and instruction fields and the prompts.
const kbdintScript = `import json, sys, warnings
warnings.filterwarnings("ignore")
import paramiko

a = json.loads(sys.argv[1])
t = paramiko.Transport((a["host"], a["port"]))
t.start_client(timeout=20)
if t.get_remote_server_key().get_base64() != a["host_key"]:
    sys.exit("wrong host key")
asked = []
def handler(name, instruction, prompts):
    asked.append({"name": name, "instruction": instruction, "prompts": [p for p, _ in prompts]})
    return [a["password"] for _ in prompts]
t.auth_interactive(a["user"], handler)
ch = t.open_session()
ch.exec_command("echo ok")
out = ch.makefile("rb").read().decode()
t.close()
print(json.dumps({"asked": asked, "out": out}))
`

// TestKeyboardInteractivePromptHasNoName: the password prompt carries no
// name (OpenSSH prints a non-empty name on a line of its own before each
// prompt) and no instruction, only "Password: ".
func TestKeyboardInteractivePromptHasNoName(t *testing.T) {
	requirePeers(t, pythonPath)
	p := newPool(t, poolOptions{nodes: 1})
	dir := t.TempDir()
	script := filepath.Join(dir, "kbdint.py")
	if err := os.WriteFile(script, []byte(kbdintScript), 0o644); err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p.port())
	arg, _ := json.Marshal(map[string]any{
		"host": "127.0.0.1", "port": port, "user": "pat", "password": "pat-secret-1",
		"host_key": base64.StdEncoding.EncodeToString(p.hostKey().Marshal()),
	})
	out, errs, code := tool(t, dir, nil, pythonPath, script, string(arg))
	var r struct {
		Asked []struct {
			Name, Instruction string
			Prompts           []string
		}
		Out string
	}
	if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil {
		t.Fatalf("keyboard-interactive login as pat: exit %d, %v; stdout %q; stderr:\n%s", code, err, out, errs)
	}
	if r.Out != "ok\n" || len(r.Asked) != 1 {
		t.Fatalf("keyboard-interactive: asked %+v, command printed %q; want one question and ok", r.Asked, r.Out)
	}
	if q := r.Asked[0]; q.Name != "" || q.Instruction != "" || len(q.Prompts) != 1 || q.Prompts[0] != "Password: " {
		t.Fatalf("keyboard-interactive asked name %q, instruction %q, prompts %q; want no name, no instruction, one \"Password: \"", q.Name, q.Instruction, q.Prompts)
	}
}
