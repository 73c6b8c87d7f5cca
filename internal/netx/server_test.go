package netx

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventually polls cond until it holds, or fails the test after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serve runs s on a fresh loopback listener until the test ends, and
// returns its address and what Serve returned (once it has).
func serve(t *testing.T, s *Server) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String(), served
}

func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readLine reads a line from c, or "" at EOF or after 2 s.
func readLine(c net.Conn) string {
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}

// TestServeEchoesAndCloses: a connection is served in its own goroutine;
// Close closes it and Serve returns ErrServerClosed.
func TestServeEchoesAndCloses(t *testing.T) {
	s := &Server{Handler: func(nc net.Conn, _ *Slot) { _, _ = io.Copy(nc, nc) }}
	addr, served := serve(t, s)
	c := dialFrom(t, "127.0.0.1", addr)
	_, _ = io.WriteString(c, "hello\n")
	if got := readLine(c); got != "hello\n" {
		t.Fatalf("echo: %q", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != ErrServerClosed {
		t.Fatalf("Serve returned %v, want ErrServerClosed", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("client read after Close: %v, want EOF", err)
	}
	select {
	case <-s.Stopping():
	default:
		t.Fatal("Stopping still open after Close")
	}
	// A server that is closed serves no more listeners.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err != ErrServerClosed {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("the listener given after Close was left open")
	}
}

// TestZeroServer: the zero value accepts and closes connections.
func TestZeroServer(t *testing.T) {
	var s Server
	addr, _ := serve(t, &s)
	c := dialFrom(t, "127.0.0.1", addr)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read: %v, want EOF", err)
	}
}

// TestSlotsTakenInAcceptLoop: the caps hold for connections arriving
// together, a refused connection is told why by Refused, and a slot comes
// back when its connection proves itself or closes.
func TestSlotsTakenInAcceptLoop(t *testing.T) {
	slots := &Slots{Max: 3, PerAddress: 2}
	prove := make(chan struct{})
	var refusals sync.Map // key -> error
	s := &Server{
		Slots: slots,
		Handler: func(nc net.Conn, slot *Slot) {
			_, _ = io.WriteString(nc, "hello "+slot.Key()+"\n")
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-prove: // the connection proves itself while open
					slot.Release()
				case <-done:
				}
			}()
			_, _ = io.Copy(io.Discard, nc) // until the client closes
		},
		Refused: func(nc net.Conn, key string, err error) {
			refusals.Store(key, err)
			_, _ = io.WriteString(nc, "busy: "+err.Error()+"\n")
		},
	}
	addr, _ := serve(t, s)
	a1, a2, a3 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	for i, c := range []net.Conn{a1, a2} {
		if got := readLine(c); got != "hello 127.0.0.1\n" {
			t.Fatalf("connection %d from 127.0.0.1: %q", i+1, got)
		}
	}
	if got := readLine(a3); !strings.Contains(got, ErrAddressSlotsFull.Error()) {
		t.Fatalf("third from 127.0.0.1: %q, want the per-address refusal", got)
	}
	if err, _ := refusals.Load("127.0.0.1"); !errors.Is(err.(error), ErrAddressSlotsFull) {
		t.Fatalf("Refused got %v", err)
	}
	b1 := dialFrom(t, "127.0.0.2", addr)
	if got := readLine(b1); got != "hello 127.0.0.2\n" {
		t.Fatalf("127.0.0.2: %q", got)
	}
	if got := readLine(dialFrom(t, "127.0.0.3", addr)); !strings.Contains(got, ErrSlotsFull.Error()) {
		t.Fatalf("fourth in all: %q, want the global refusal", got)
	}
	// Closing a connection gives its slot back.
	b1.Close()
	eventually(t, "b1's slot back", func() bool { return slots.InUse() == 2 })
	// Proven connections give theirs back while they stay open.
	close(prove)
	eventually(t, "proven slots back", func() bool { return slots.InUse() == 0 })
	for _, ip := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.3"} {
		if got := readLine(dialFrom(t, ip, addr)); !strings.HasPrefix(got, "hello ") {
			t.Fatalf("%s after the slots came back: %q", ip, got)
		}
	}
}

// TestDefaultRefusalIsLogged: without Refused, a refusal is logged and
// the connection closed.
func TestDefaultRefusalIsLogged(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	hold := make(chan struct{})
	defer close(hold)
	s := &Server{Name: "rdp", Logger: zap.New(core), Slots: &Slots{Max: 1}, Handler: func(net.Conn, *Slot) { <-hold }}
	addr, _ := serve(t, s)
	dialFrom(t, "127.0.0.1", addr)
	eventually(t, "the first slot taken", func() bool { return s.Slots.InUse() == 1 })
	c := dialFrom(t, "127.0.0.1", addr)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("refused connection: %v, want EOF", err)
	}
	eventually(t, "the refusal logged", func() bool {
		return logs.FilterMessage("rdp connection refused").FilterField(zap.String("reason", ErrSlotsFull.Error())).Len() == 1
	})
}

// TestPanicIsRecovered: a handler's panic is logged with its stack; the
// connection is closed, its slot given back, and the server goes on.
func TestPanicIsRecovered(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	s := &Server{Name: "ssh", Logger: zap.New(core), Slots: &Slots{Max: 1}, Handler: func(nc net.Conn, _ *Slot) {
		if readLine(nc) == "panic\n" {
			panic("boom")
		}
		_, _ = io.WriteString(nc, "fine\n")
	}}
	addr, _ := serve(t, s)
	c := dialFrom(t, "127.0.0.1", addr)
	_, _ = io.WriteString(c, "panic\n")
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("after the panic: %v, want EOF", err)
	}
	eventually(t, "the panic logged", func() bool { return logs.FilterMessage("ssh connection panicked").Len() == 1 })
	e := logs.FilterMessage("ssh connection panicked").All()[0]
	if stack, _ := e.ContextMap()["stack"].(string); !strings.Contains(stack, "server_test.go") {
		t.Fatalf("no stack of the handler in %v", e.ContextMap())
	}
	eventually(t, "the slot back", func() bool { return s.Slots.InUse() == 0 })
	c = dialFrom(t, "127.0.0.1", addr)
	_, _ = io.WriteString(c, "hi\n")
	if got := readLine(c); got != "fine\n" {
		t.Fatalf("after a panic the server answered %q", got)
	}
}

// TestShutdownWaitsThenCuts: Shutdown returns at once when nothing is
// open; with a connection open it waits for ctx, then closes it.
func TestShutdownWaitsThenCuts(t *testing.T) {
	s := &Server{Handler: func(nc net.Conn, _ *Slot) { _, _ = io.Copy(io.Discard, nc) }}
	addr, served := serve(t, s)
	c := dialFrom(t, "127.0.0.1", addr)
	eventually(t, "the connection tracked", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.conns) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a connection open: %v", err)
	}
	if d := time.Since(began); d < 150*time.Millisecond {
		t.Fatalf("Shutdown cut after %s, before its deadline", d)
	}
	if err := <-served; err != ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("client after the cut: %v, want EOF", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("still accepting after Shutdown")
	}

	idle := &Server{}
	serve(t, idle)
	if err := idle.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown with nothing open: %v", err)
	}
}

// TestWaitLeavesConnectionsOpen: Wait stops accepting and, when its
// context ends, leaves the connections to the caller (a front end tells
// its users before it cuts them).
func TestWaitLeavesConnectionsOpen(t *testing.T) {
	s := &Server{Handler: func(nc net.Conn, _ *Slot) { _, _ = io.Copy(nc, nc) }}
	addr, _ := serve(t, s)
	c := dialFrom(t, "127.0.0.1", addr)
	_, _ = io.WriteString(c, "one\n")
	readLine(c)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v", err)
	}
	<-s.Stopping()
	_, _ = io.WriteString(c, "two\n")
	if got := readLine(c); got != "two\n" {
		t.Fatalf("after Wait gave up the connection answered %q", got)
	}
	_ = s.Close()
}

// closeRecorder stands for a wrapper that holds bytes until Close.
type closeRecorder struct {
	net.Conn
	closed *atomic.Int32
}

func (c closeRecorder) Close() error { c.closed.Add(1); return c.Conn.Close() }

// TestCloseClosesTheWrappedConn: the tracked connection is the one Wrap
// returned, so Close goes through the wrapper; and connections a handler
// tracks are closed too, while Track refuses new ones once stopping.
func TestCloseClosesTheWrappedConn(t *testing.T) {
	var wrapped atomic.Int32
	extra, peer := net.Pipe()
	defer peer.Close()
	tracked := make(chan bool, 1)
	s := &Server{
		Wrap: func(nc net.Conn) net.Conn { return closeRecorder{nc, &wrapped} },
	}
	s.Handler = func(nc net.Conn, _ *Slot) {
		if _, ok := nc.(closeRecorder); !ok {
			t.Errorf("handler got %T, not the wrapped connection", nc)
		}
		ok := s.Track(extra)
		tracked <- ok
		if ok {
			defer s.Untrack(extra)
		}
		_, _ = io.Copy(io.Discard, nc)
	}
	addr, _ := serve(t, s)
	dialFrom(t, "127.0.0.1", addr)
	if !<-tracked {
		t.Fatal("Track refused while serving")
	}
	_ = s.Close()
	if n := wrapped.Load(); n < 1 {
		t.Fatal("Close did not go through the wrapper")
	}
	if _, err := peer.Write([]byte("x")); err == nil {
		t.Fatal("the tracked extra connection is still open")
	}
	if s.Track(peer) {
		t.Fatal("Track took a connection after Close")
	}
}

// tempListener fails its first Accept with a temporary error, then
// passes on to a real listener.
type tempListener struct {
	net.Listener
	failed atomic.Bool
	fatal  error // returned instead of accepting, when set
}

func (l *tempListener) Accept() (net.Conn, error) {
	if l.fatal != nil {
		return nil, l.fatal
	}
	if l.failed.CompareAndSwap(false, true) {
		return nil, tempErr{}
	}
	return l.Listener.Accept()
}

// TestAcceptErrors: a temporary accept error is logged and waited out; a
// permanent one ends Serve with it, wrapped.
func TestAcceptErrors(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Logger: zap.New(core), Handler: func(nc net.Conn, _ *Slot) { _, _ = io.WriteString(nc, "hi\n") }}
	go func() { _ = s.Serve(&tempListener{Listener: ln}) }()
	defer s.Close()
	if got := readLine(dialFrom(t, "127.0.0.1", ln.Addr().String())); got != "hi\n" {
		t.Fatalf("after a temporary error: %q", got)
	}
	if logs.FilterMessage("accept failed; retrying").Len() != 1 {
		t.Fatalf("log: %v", logs.All())
	}
	if logs.FilterMessage("tcp gateway listening").Len() != 1 {
		t.Fatalf("no listening line: %v", logs.All())
	}

	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	broken := errors.New("listener broken")
	s2 := &Server{Name: "rdp"}
	if err := s2.Serve(&tempListener{Listener: ln2, fatal: broken}); !errors.Is(err, broken) || !strings.Contains(err.Error(), "accepting rdp connections") {
		t.Fatalf("Serve on a broken listener: %v", err)
	}
}

// TestDrainLetsConnectionsGoOn: Drain closes the listener (Serve returns
// ErrServerClosed, a new connection is refused) but a connection under
// way still tracks the legs it opens and Stopping stays open; Drain
// returns once the last connection ends.
func TestDrainLetsConnectionsGoOn(t *testing.T) {
	s := &Server{}
	var tracked atomic.Bool
	s.Handler = func(nc net.Conn, _ *Slot) {
		readLine(nc) // the login, still under way at the drain
		leg, peer := net.Pipe()
		defer peer.Close()
		tracked.Store(s.Track(leg))
		s.Untrack(leg)
		leg.Close()
		_, _ = io.WriteString(nc, "done\n")
		readLine(nc)
	}
	addr, served := serve(t, s)
	c := dialFrom(t, "127.0.0.1", addr)
	eventually(t, "the connection tracked", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.conns) == 1 })
	drained := make(chan error, 1)
	go func() { drained <- s.Drain(context.Background()) }()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Drain: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("a connection was accepted after Drain")
	}
	select {
	case <-s.Stopping():
		t.Error("Stopping closed by Drain")
	default:
	}
	_, _ = io.WriteString(c, "login\n")
	if got := readLine(c); got != "done\n" || !tracked.Load() {
		t.Fatalf("the login under way: %q, tracked %v", got, tracked.Load())
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned with a connection open: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.Close()
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}
