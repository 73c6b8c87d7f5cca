package e2e

import (
	"bytes"
	"fmt"

	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/recording"
)

// TestSessionRecordedWithoutPasswords: a real ssh -t session through the
// gateway prints, resizes its window and reads a password without echo.
// The recording plays with asciinema to the same output, holds the
// resize, and does not hold the password; commands without a PTY (ssh
// host cmd, scp) get audit lines with their command, exit status and
// bytes; ops list and play recordings with the CLI.
func TestSessionRecordedWithoutPasswords(t *testing.T) {
	requirePeers(t, "python3", "asciinema")
	p := newPool(t, poolOptions{nodes: 1, cfg: func(c *app.Config) {
		c.Recording = recording.Config{Enabled: true}
	}})
	script, _ := filepath.Abs("testdata/ptysession.py")
	args := append([]string{script, "ssh", "-tt"}, p.sshArgs("-p")...)
	args = append(args, "alice@127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdin = strings.NewReader("hunter2-secret\n")
	var shown, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &shown, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("the terminal session: %v\n%s\n%s", err, shown.String(), errb.String())
	}
	for _, want := range []string{"hello from the recording", "30 100", "got-14"} {
		if !strings.Contains(shown.String(), want) {
			t.Fatalf("the terminal did not show %q:\n%s", want, shown.String())
		}
	}

	bin := buildPoolgate(t)
	admin1 := "http://" + p.gw.AdminAddr()
	var list admin.RecordingsJSON
	testutilEventually(t, "the recording's end written", func() bool {
		getJSON(t, admin1+"/api/recordings?user=alice", &list)
		return len(list.Recordings) == 1 && !list.Recordings[0].End.IsZero()
	})
	m := list.Recordings[0]
	if m.Kind != "pty" || m.User != "alice" || m.Node != "node-1" || m.Incomplete || m.Input || m.Exit != 0 || m.Size == 0 {
		t.Fatalf("recording metadata %+v", m)
	}
	out, err := exec.Command(bin, "recordings", "--user", "alice", "--admin", admin1).CombinedOutput()
	if err != nil || !strings.Contains(string(out), m.ID) || !strings.Contains(string(out), "(shell)") {
		t.Fatalf("poolgate recordings: %v\n%s", err, out)
	}
	cast, err := exec.Command(bin, "play", m.ID, "--raw", "--admin", admin1).Output()
	if err != nil {
		t.Fatalf("poolgate play --raw: %v", err)
	}
	if bytes.Contains(cast, []byte("hunter2")) {
		t.Fatalf("the recording holds the password typed with echo off:\n%s", cast)
	}
	var hdr struct {
		Version, Width, Height int
		Env                    map[string]string
	}
	first, _, _ := bytes.Cut(cast, []byte("\n"))
	if err := json.Unmarshal(first, &hdr); err != nil || hdr.Version != 2 || hdr.Width != 80 || hdr.Height != 24 || hdr.Env["TERM"] == "" {
		t.Fatalf("asciicast header %s: %+v %v", first, hdr, err)
	}
	if !bytes.Contains(cast, []byte(`, "r", "100x30"]`)) {
		t.Fatalf("no resize event in the recording:\n%s", cast)
	}
	if bytes.Contains(cast, []byte(`, "i", `)) {
		t.Fatal("keystrokes recorded without recording.input")
	}
	file := filepath.Join(t.TempDir(), "s.cast")
	if err := os.WriteFile(file, cast, 0o600); err != nil {
		t.Fatal(err)
	}
	catOut, err := underPTY("asciinema", "cat", file).CombinedOutput()
	if err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, catOut)
	}
	for _, want := range []string{"hello from the recording", "30 100", "got-14", "Password: "} {
		if !bytes.Contains(catOut, []byte(want)) {
			t.Fatalf("asciinema cat lacks %q:\n%s", want, catOut)
		}
	}
	if playOut, err := underPTY("asciinema", "play", "-s", "50", "-i", "0.2", file).CombinedOutput(); err != nil || !bytes.Contains(playOut, []byte("hello from the recording")) {
		t.Fatalf("asciinema play: %v\n%s", err, playOut)
	}
	ours, err := exec.Command(bin, "play", m.ID, "--speed", "50", "--idle-limit", "200ms", "--admin", admin1).Output()
	if err != nil || !bytes.Contains(ours, []byte("hello from the recording")) || !bytes.Contains(ours, []byte("got-14")) {
		t.Fatalf("poolgate play: %v\n%s", err, ours)
	}
	if !strings.Contains(p.logText(), `"recording played through the admin API"`) {
		t.Fatal("who played the recording is not logged")
	}

	// The dashboard lists it and plays it in the browser.
	requirePeers(t, "chromium")
	tab := newBrowser(t, "").session()
	tab.do("open the dashboard", chromedp.Navigate(admin1+"/"))
	tab.until("the recording listed", fmt.Sprintf(`!!document.querySelector('tr[data-recording=%q] button.play')`, m.ID), 15*time.Second)
	tab.do("play it", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-recording=%q] button.play`, m.ID))))
	tab.until("the player showing the session", `document.getElementById("screen").textContent.includes("hello from the recording") && document.getElementById("player-state").textContent === "ended"`, 30*time.Second)
	tab.until("the player's terminal at the resized width", `document.getElementById("screen").textContent.includes("got-14") && !document.getElementById("screen").textContent.includes("hunter2")`, 5*time.Second)
	tab.screenshot("dashboard-recording-player.png")

	// Without a PTY: audit lines, no recording.
	if _, errOut, code := p.sshCmd("alice", "echo audited; exit 3"); code != 3 {
		t.Fatalf("exec: exit %d %q", code, errOut)
	}
	src := filepath.Join(t.TempDir(), "data.bin")
	if err := os.WriteFile(src, bytes.Repeat([]byte("x"), 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := p.runClient("scp", append(append(p.sshArgs("-P"), "-O"), src, "alice@127.0.0.1:/tmp/poolgate-audit.bin"), nil); code != 0 {
		t.Fatalf("scp: %d %s %s", code, out, errOut)
	}
	logs := p.logText()
	for _, want := range []string{`"command":"echo audited; exit 3"`, `"exit_status":3`, `"command":"scp -t /tmp/poolgate-audit.bin"`} {
		if !strings.Contains(logs, want) {
			t.Fatalf("the audit log lacks %s:\n%s", want, grepLines(logs, "ssh command"))
		}
	}
	// sftp: one audit line per file, with its path, direction and size.
	batch := filepath.Join(t.TempDir(), "batch")
	back := filepath.Join(t.TempDir(), "back.bin")
	if err := os.WriteFile(batch, []byte("put "+src+" /tmp/poolgate-sftp-up.bin\nget /tmp/poolgate-sftp-up.bin "+back+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := p.runClient("sftp", append(p.sshArgs("-P"), "-b", batch, "alice@127.0.0.1"), nil); code != 0 {
		t.Fatalf("sftp: %d %s %s", code, out, errOut)
	}
	logs = p.logText()
	for _, want := range []string{
		`"path":"/tmp/poolgate-sftp-up.bin","direction":"upload","bytes_read":0,"bytes_written":5000`,
		`"path":"/tmp/poolgate-sftp-up.bin","direction":"download","bytes_read":5000,"bytes_written":0`,
	} {
		if strings.Count(logs, want) != 1 {
			t.Fatalf("the audit log has not one %s:\n%s", want, grepLines(logs, "sftp file"))
		}
	}
	getJSON(t, admin1+"/api/recordings", &list)
	if len(list.Recordings) != 1 {
		t.Fatalf("commands without a PTY were recorded: %+v", list.Recordings)
	}
}

func testutilEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// underPTY runs a command with a terminal of its own, as asciinema wants
// (it opens /dev/tty), through Python's pty.spawn.
func underPTY(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("python3", append([]string{"-c", "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdin = strings.NewReader("")
	return cmd
}
