package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSDNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if err := sdNotify("MAINPID=42\nREADY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "MAINPID=42\nREADY=1" {
		t.Fatalf("systemd heard %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}

// TestInherit: a process started by an upgrade finds its listeners and
// pipes by the fds its environment names, and unsets it.
func TestInherit(t *testing.T) {
	t.Setenv(envUpgrade, "")
	if in, err := inherit(); in != nil || err != nil {
		t.Fatalf("without an upgrade: %v, %v", in, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, _ := ln.(*net.TCPListener).File()
	r, w, _ := os.Pipe()
	defer w.Close()
	t.Setenv(envListeners, fmt.Sprintf("ssh:%d:127.0.0.1:22", lf.Fd()))
	t.Setenv(envUpgrade, fmt.Sprintf("ready:%d,state:%d", w.Fd(), r.Fd()))
	in, err := inherit()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(envUpgrade) != "" || os.Getenv(envListeners) != "" {
		t.Error("the upgrade's environment is still set")
	}
	if len(in.listeners) != 1 || in.listeners[0].Name != "ssh" || in.listeners[0].Addr != "127.0.0.1:22" || in.listeners[0].Listener.Addr().String() != ln.Addr().String() {
		t.Fatalf("listeners %+v", in.listeners)
	}
	in.listeners[0].Listener.Close()
	if in.ready == nil || in.state == nil {
		t.Fatal("pipes missing")
	}

	// Each bad case gets fds of its own (inherit takes them over).
	fd := func() int {
		d, err := syscall.Dup(int(w.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, bad := range []func() (string, string){
		func() (string, string) { return "ssh:x:127.0.0.1:22", fmt.Sprintf("ready:%d,state:%d", fd(), fd()) },
		func() (string, string) { return "", fmt.Sprintf("ready:%d", fd()) },
		func() (string, string) { return "ssh", fmt.Sprintf("ready:%d,state:%d", fd(), fd()) },
		func() (string, string) { return "", "ready:1,state:2" },
	} {
		l, u := bad()
		t.Setenv(envListeners, l)
		t.Setenv(envUpgrade, u)
		if _, err := inherit(); err == nil || !strings.Contains(err.Error(), "POOLGATE_") {
			t.Errorf("inherit with %q, %q: %v, want an error naming the variable", l, u, err)
		}
	}
}

func TestUpgradeReplica(t *testing.T) {
	if got := upgradeReplica("gw-a", 4242); got != "gw-a.4242" {
		t.Errorf("upgradeReplica = %q", got)
	}
	if got := upgradeReplica(strings.Repeat("x", 64), 4242); len(got) != 64 || !strings.HasSuffix(got, ".4242") {
		t.Errorf("upgradeReplica of a 64-character name = %q", got)
	}
}
