package app

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var errFakeClosed = errors.New("fake: closed")

// fakeFront serves until stopped, or fails at once with fail.
type fakeFront struct {
	name  string
	fail  error
	log   *stopLog
	once  sync.Once
	stop  chan struct{}
	slow  bool // Shutdown waits for its context
	ready chan struct{}
}

// stopLog records the order in which front ends were stopped.
type stopLog struct {
	mu    sync.Mutex // protects calls
	calls []string
}

func (l *stopLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, s)
}

func (l *stopLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.calls...)
}

func newFake(name string, log *stopLog) *fakeFront {
	return &fakeFront{name: name, log: log, stop: make(chan struct{}), ready: make(chan struct{})}
}

func (f *fakeFront) Serve(net.Listener) error {
	close(f.ready)
	if f.fail != nil {
		return f.fail
	}
	<-f.stop
	return errFakeClosed
}

func (f *fakeFront) Shutdown(ctx context.Context) error {
	f.log.add("shutdown " + f.name)
	if f.slow {
		<-ctx.Done()
		return ctx.Err()
	}
	f.once.Do(func() { close(f.stop) })
	return nil
}

func (f *fakeFront) Close() error {
	f.log.add("close " + f.name)
	f.once.Do(func() { close(f.stop) })
	return nil
}

func fakeGateway(log *zap.Logger, fronts ...frontEnd) *Gateway {
	g := &Gateway{cfg: Config{ShutdownTimeout: 100 * time.Millisecond}, log: log}
	for _, f := range fronts {
		f.closed = errFakeClosed
		g.addFrontEnd(f)
	}
	return g
}

// TestFrontEndsStopInOrder: on a requested stop every front end is shut
// down (one that outlasts shutdown_timeout is then closed), the admin API
// only after all the others, and Run's part returns nil.
func TestFrontEndsStopInOrder(t *testing.T) {
	var stops stopLog
	ssh, http, admin := newFake("ssh", &stops), newFake("http", &stops), newFake("admin", &stops)
	http.slow = true
	core, logs := observer.New(zap.InfoLevel)
	g := fakeGateway(zap.New(core),
		frontEnd{name: "ssh", srv: ssh, vital: true},
		frontEnd{name: "admin", srv: admin, closeLast: true},
		frontEnd{name: "http", srv: http},
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.serveFrontEnds(ctx) }()
	for _, f := range []*fakeFront{ssh, http, admin} {
		<-f.ready
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("after a requested stop: %v", err)
	}
	calls := stops.all()
	if len(calls) != 4 || calls[3] != "close admin" {
		t.Fatalf("stops %q: want ssh and http shut down (http then closed), admin closed last", calls)
	}
	if logs.FilterMessage("closed connections still open at the shutdown timeout").FilterField(zap.String("front_end", "http")).Len() != 1 {
		t.Fatalf("log %v", logs.All())
	}
}

// TestVitalFrontEndFailureStopsAll: the SSH gateway failing stops the
// gateway with its error; another front end failing is logged and the
// rest go on.
func TestVitalFrontEndFailureStopsAll(t *testing.T) {
	var stops stopLog
	broken := errors.New("accepting ssh connections: broken")
	ssh, rdp := newFake("ssh", &stops), newFake("rdp", &stops)
	ssh.fail = broken
	g := fakeGateway(zap.NewNop(), frontEnd{name: "ssh", srv: ssh, vital: true}, frontEnd{name: "rdp", srv: rdp})
	if err := g.serveFrontEnds(context.Background()); !errors.Is(err, broken) {
		t.Fatalf("serveFrontEnds: %v, want the SSH gateway's error", err)
	}
	if calls := stops.all(); len(calls) != 2 {
		t.Fatalf("stops %q: want both shut down", calls)
	}

	core, logs := observer.New(zap.InfoLevel)
	ssh, rdp = newFake("ssh", &stops), newFake("rdp", &stops)
	rdp.fail = errors.New("accepting rdp connections: broken")
	g = fakeGateway(zap.New(core), frontEnd{name: "ssh", srv: ssh, vital: true}, frontEnd{name: "rdp", srv: rdp})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.serveFrontEnds(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessage("front end stopped; the others go on").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the RDP gateway's failure was not logged")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the gateway stopped with the RDP gateway: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("after a requested stop: %v", err)
	}
}
