package app

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// DemoNode is an in-process SSH server standing in for a pool VM: it
// trusts the gateway's user CA (or a fixed password) and runs a tiny shell
// that says which node it is.
type DemoNode struct {
	Name     string
	srv      *gliderssh.Server
	ln       net.Listener
	serveErr chan error
}

// StartDemoNode listens on addr (e.g. 127.0.0.1:0) and serves until Close.
func StartDemoNode(name, addr string, hostKey gossh.Signer, ca gossh.PublicKey, password string) (*DemoNode, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo node %s: %w", name, err)
	}
	d := &DemoNode{Name: name, ln: ln, serveErr: make(chan error, 1)}
	checker := &gossh.CertChecker{}
	d.srv = &gliderssh.Server{
		Handler: d.session,
		PublicKeyHandler: func(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
			cert, ok := key.(*gossh.Certificate)
			if !ok || !bytes.Equal(cert.SignatureKey.Marshal(), ca.Marshal()) {
				return false
			}
			return checker.CheckCert(ctx.User(), cert) == nil
		},
		PasswordHandler: func(ctx gliderssh.Context, pw string) bool { return password != "" && pw == password },
	}
	d.srv.AddHostKey(hostKey)
	go func() { d.serveErr <- d.srv.Serve(ln) }()
	return d, nil
}

// Addr is the node's SSH address.
func (d *DemoNode) Addr() string { return d.ln.Addr().String() }

// Close stops the node and closes its sessions.
func (d *DemoNode) Close() error {
	err := d.srv.Close()
	<-d.serveErr
	return err
}

// session runs a command, an interactive shell (with a PTY), or a script
// read from stdin.
func (d *DemoNode) session(s gliderssh.Session) {
	if cmd := s.RawCommand(); cmd != "" {
		out, code, _ := d.exec(s, cmd)
		_, _ = io.WriteString(s, out)
		_ = s.Exit(code)
		return
	}
	if _, _, isPty := s.Pty(); isPty {
		t := term.NewTerminal(s, d.Name+"$ ")
		fmt.Fprintf(t, "Welcome to %s, a poolgate demo node, %s.\nYour sessions stay on this node while you are connected. Type 'help'.\n", d.Name, s.User())
		for {
			line, err := t.ReadLine()
			if err != nil {
				_ = s.Exit(0)
				return
			}
			out, code, exit := d.exec(s, line)
			_, _ = io.WriteString(t, out)
			if exit {
				_ = s.Exit(code)
				return
			}
		}
	}
	sc := bufio.NewScanner(s)
	code := 0
	for sc.Scan() {
		out, c, exit := d.exec(s, sc.Text())
		code = c
		_, _ = io.WriteString(s, out)
		if exit {
			break
		}
	}
	_ = s.Exit(code)
}

// exec runs one line of the demo shell and returns its output, its status,
// and whether the line was a (valid) exit.
func (d *DemoNode) exec(s gliderssh.Session, line string) (out string, code int, exit bool) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return "", 0, false
	}
	if f[0] == "exit" {
		if len(f) > 1 {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return "exit: want a number\n", 2, false
			}
			return "", n, true
		}
		return "", 0, true
	}
	out, code = d.run(s, f)
	return out, code, false
}

// run runs one command of the demo shell other than exit.
func (d *DemoNode) run(s gliderssh.Session, f []string) (string, int) {
	switch f[0] {
	case "hostname", "node":
		return d.Name + "\n", 0
	case "whoami":
		return s.User() + "\n", 0
	case "echo":
		return strings.Join(f[1:], " ") + "\n", 0
	case "env":
		env := append([]string{"DSVM_NODE=" + d.Name, "USER=" + s.User()}, s.Environ()...)
		sort.Strings(env)
		return strings.Join(env, "\n") + "\n", 0
	case "sleep":
		secs := 1
		if len(f) > 1 {
			n, err := strconv.Atoi(f[1])
			if err != nil || n < 0 || n > 3600 {
				return "sleep: want seconds from 0 to 3600\n", 2
			}
			secs = n
		}
		select {
		case <-time.After(time.Duration(secs) * time.Second):
		case <-s.Context().Done():
		}
		return "", 0
	case "help":
		return "demo shell commands: hostname (or node), whoami, echo ARGS, env, sleep SECONDS, exit [N], help\n", 0
	}
	return fmt.Sprintf("demo shell: %s: command not found (try help)\n", f[0]), 127
}
