// SIGUSR2: upgrade the binary without cutting sessions. The running
// process starts the binary now at the path it was started from, with
// the same arguments, handing it the listeners; once the new process is
// ready it stops accepting, tells it its pins and sessions, and keeps
// relaying its own until they end (app/upgrade.go).
//
// Written by hand rather than with cloudflare/tableflip: the handover
// needs a second pipe beside the listeners (pins and sessions, then the
// sessions that end), and the old process's life after the handover
// (draining for upgrade_timeout, then a stop) is the gateway's own; what
// is left (passing fds, a ready line) is a few dozen lines.

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// The environment of a process started by an upgrade: which inherited
// fd is which front end's listener (name:fd:address, comma-separated),
// and the fds of the pipes to the old process.
const (
	envListeners = "POOLGATE_LISTENERS" // ssh:3:0.0.0.0:22,admin:4:127.0.0.1:9090
	envUpgrade   = "POOLGATE_UPGRADE"   // ready:5,state:6
)

// upgradeReadyWait is how long the old process waits for the new one.
const upgradeReadyWait = 30 * time.Second

// startPath is the binary the running process was started from, made
// absolute at start: os.Args[0] (searched in PATH when it has no slash),
// so that a symlink swapped to a new release is followed, as a restart
// would; os.Executable when that fails. /proc/self/exe cannot be read
// later: once the file is replaced it names the deleted one.
func startPath() (string, error) {
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		if lp, err := exec.LookPath(p); err == nil {
			p = lp
		} else {
			return os.Executable()
		}
	}
	return filepath.Abs(p)
}

// upgrader starts the successor on SIGUSR2. One upgrade at a time; after
// a handover the process serves no one new and refuses more.
type upgrader struct {
	exe  string
	args []string
	log  *zap.Logger
	gw   *app.Gateway

	mu      sync.Mutex // protects running and handed
	running bool
	handed  bool
	// handover ends with the old process's handover writer (once handed).
	handover chan error
	ctx      context.Context // WriteHandover's: ends after Run returned
}

// upgrade starts the new binary and, once it is ready, hands over. Any
// failure before that leaves this process serving as before.
func (u *upgrader) upgrade() {
	u.mu.Lock()
	if u.running || u.handed {
		u.mu.Unlock()
		u.log.Warn("upgrade: SIGUSR2 ignored: an upgrade is under way or done (send it to the new process)")
		return
	}
	u.running = true
	u.mu.Unlock()
	err := u.start()
	u.mu.Lock()
	u.running = false
	u.handed = err == nil
	u.mu.Unlock()
	if err != nil {
		u.log.Error("upgrade: failed; this process serves on as before", zap.String("binary", u.exe), zap.Error(err))
	}
}

func (u *upgrader) start() error {
	u.log.Info("upgrade: starting the new binary", zap.String("binary", u.exe), zap.Strings("args", u.args))
	files, err := u.gw.ListenerFiles()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	stateR, stateW, err := os.Pipe()
	if err != nil {
		readyR.Close()
		readyW.Close()
		return err
	}
	cmd := exec.Command(u.exe, u.args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	var ls []string
	for i, f := range files {
		cmd.ExtraFiles = append(cmd.ExtraFiles, f.File)
		ls = append(ls, fmt.Sprintf("%s:%d:%s", f.Name, 3+i, f.Addr))
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, readyW, stateR)
	n := 3 + len(files)
	cmd.Env = append(environWithout(envListeners, envUpgrade),
		envListeners+"="+strings.Join(ls, ","),
		fmt.Sprintf("%s=ready:%d,state:%d", envUpgrade, n, n+1))
	err = cmd.Start()
	// The child has its copies now (or none): close this process's.
	for _, f := range files {
		f.File.Close()
	}
	readyW.Close()
	stateR.Close()
	if err != nil {
		readyR.Close()
		stateW.Close()
		return fmt.Errorf("starting %s: %w", u.exe, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it, whenever it ends
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(readyR).ReadString('\n')
		ready <- strings.TrimSpace(line)
		readyR.Close()
	}()
	fail := func(err error) error {
		stateW.Close()
		return err
	}
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "ready ") {
			select {
			case <-exited:
			case <-time.After(upgradeReadyWait):
				_ = cmd.Process.Kill()
			}
			return fail(fmt.Errorf("the new process %d exited before it was ready (its log says why)", cmd.Process.Pid))
		}
	case err := <-exited:
		return fail(fmt.Errorf("the new process %d exited before it was ready (its log says why): %v", cmd.Process.Pid, err))
	case <-time.After(upgradeReadyWait):
		_ = cmd.Process.Kill()
		return fail(fmt.Errorf("the new process %d was not ready within %s; it was killed", cmd.Process.Pid, upgradeReadyWait))
	}
	kept := u.gw.Retire()
	u.log.Info(fmt.Sprintf("upgrade: new process %d ready; this one keeps %d sessions and accepts no more", cmd.Process.Pid, kept),
		zap.Int("pid", cmd.Process.Pid), zap.Int("sessions", kept))
	go func() { u.handover <- u.gw.WriteHandover(u.ctx, stateW) }()
	return nil
}

// wait waits for the handover writer to finish, once Run has returned
// (u.ctx ended).
func (u *upgrader) wait() {
	u.mu.Lock()
	handed := u.handed
	u.mu.Unlock()
	if !handed {
		return
	}
	select {
	case err := <-u.handover:
		if err != nil && !errors.Is(err, syscall.EPIPE) {
			u.log.Warn("upgrade: telling the new process about sessions", zap.Error(err))
		}
	case <-time.After(5 * time.Second):
	}
}

func environWithout(keys ...string) []string {
	var out []string
env:
	for _, kv := range os.Environ() {
		for _, k := range keys {
			if strings.HasPrefix(kv, k+"=") {
				continue env
			}
		}
		out = append(out, kv)
	}
	return out
}

// inheritance is what a process started by an upgrade got from the old
// one: the listeners and the two pipes.
type inheritance struct {
	listeners []app.InheritedListener
	ready     *os.File // write "ready PID" once serving, then close
	state     *os.File // the handover, to read
}

// inherit reads the upgrade's environment, if any, and unsets it.
func inherit() (*inheritance, error) {
	lv, uv := os.Getenv(envListeners), os.Getenv(envUpgrade)
	if uv == "" {
		return nil, nil
	}
	os.Unsetenv(envListeners)
	os.Unsetenv(envUpgrade)
	in := &inheritance{}
	for _, e := range strings.Split(uv, ",") {
		name, v, _ := strings.Cut(e, ":")
		f, err := fdFile(v, "upgrade pipe "+name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envUpgrade, err)
		}
		switch name {
		case "ready":
			in.ready = f
		case "state":
			in.state = f
		default:
			f.Close()
		}
	}
	if in.ready == nil || in.state == nil {
		return nil, fmt.Errorf("%s=%q: want ready:FD,state:FD", envUpgrade, uv)
	}
	for _, e := range strings.Split(lv, ",") {
		if e == "" {
			continue
		}
		parts := strings.SplitN(e, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("%s: bad entry %q", envListeners, e)
		}
		f, err := fdFile(parts[1], parts[0]+" listener")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envListeners, err)
		}
		ln, err := net.FileListener(f)
		f.Close() // FileListener made its own copy
		if err != nil {
			return nil, fmt.Errorf("%s: the %s listener: %w", envListeners, parts[0], err)
		}
		in.listeners = append(in.listeners, app.InheritedListener{Name: parts[0], Addr: parts[2], Listener: ln})
	}
	return in, nil
}

// fdFile makes an inherited fd a file, non-blocking so that closing it
// ends a read under way.
func fdFile(s, what string) (*os.File, error) {
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("bad fd %q for the %s", s, what)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("fd %d (the %s): %w", fd, what, err)
	}
	return os.NewFile(uintptr(fd), what), nil
}

// sdNotify sends state to systemd's notification socket ($NOTIFY_SOCKET,
// Type=notify); without one it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	// A leading '@' names an abstract socket; net does the translation.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("systemd notification socket: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("systemd notification socket: %w", err)
	}
	return nil
}

// upgradeReplica is the state.replica name of a process started by an
// upgrade: the configured one with its PID, so that its leases in the
// shared state and the old process's are apart (each gateway's heartbeat
// drops the leases under its name that it does not hold, and the old
// one clears its name at exit). Replica names are at most 64 characters.
func upgradeReplica(name string, pid int) string {
	suffix := "." + strconv.Itoa(pid)
	if len(name)+len(suffix) > 64 {
		name = name[:64-len(suffix)]
	}
	return name + suffix
}
