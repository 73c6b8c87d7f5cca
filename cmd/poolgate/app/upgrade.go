// Upgrading the binary without cutting sessions, the gateway's side: the
// old process hands its listeners over (ListenerFiles), stops accepting
// (Retire), keeps relaying its sessions until they end or upgrade_timeout
// passes, and tells the new one its pins and sessions (WriteHandover);
// the new process listens on the inherited listeners (WithListeners) and
// adopts them (WithHandover). cmd/poolgate starts the new process and
// carries the pipes.

package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
)

// InheritedListener is a listener the gateway this one took over from
// bound for front end Name at the configured address Addr.
type InheritedListener struct {
	Name, Addr string
	Listener   net.Listener
}

// WithListeners makes New listen on these listeners instead of binding
// anew, each for the front end it was bound for while that front end's
// address is unchanged; the others are closed.
func WithListeners(ls []InheritedListener) Option {
	return func(o *options) { o.inherited = ls }
}

// WithHandover makes Run read the handover from the gateway this one took
// over from (see handover.go) before it serves: the pins and sessions it
// adopts; then, while serving, the sessions that end there. Run closes r
// when it returns.
func WithHandover(r io.ReadCloser) Option {
	return func(o *options) { o.handover = r }
}

// ListenerFile is a front end's listener as a file for a new process: a
// duplicate of the socket, which stays open when the gateway closes its
// own.
type ListenerFile struct {
	Name, Addr string // the front end, and its configured address
	File       *os.File
}

// ListenerFiles duplicates every front end's listener for a new process.
// The caller closes the files once the new process has them.
func (g *Gateway) ListenerFiles() ([]ListenerFile, error) {
	var out []ListenerFile
	for _, f := range g.fronts {
		tl, ok := f.ln.Listener.(*net.TCPListener)
		if !ok {
			return closeFiles(out), fmt.Errorf("the %s listener is not TCP", f.name)
		}
		file, err := tl.File()
		if err != nil {
			return closeFiles(out), fmt.Errorf("duplicating the %s listener: %w", f.name, err)
		}
		out = append(out, ListenerFile{Name: f.name, Addr: f.addr, File: file})
	}
	return out, nil
}

func closeFiles(fs []ListenerFile) []ListenerFile {
	for _, f := range fs {
		f.File.Close()
	}
	return nil
}

// Retire stops accepting on every front end, for a new process took the
// listeners over, and returns once each listener is closed here (the new
// process's copies stay open: no connection is refused in between), with
// the number of sessions this gateway still relays. Run goes on until
// those end or upgrade_timeout passes (then it ends them as a stop does,
// telling SSH users), and then returns nil. The admin API, the metrics
// listener and the HTTP gateway let requests under way finish and close.
func (g *Gateway) Retire() int {
	g.retireOnce.Do(func() { close(g.retiring) })
	deadline := time.After(10 * time.Second)
	for _, f := range g.fronts {
		select {
		case <-f.ln.closed:
		case <-deadline:
			g.log.Warn("upgrade: a listener was not closed within 10s", zap.String("front_end", f.name))
		}
	}
	n := 0
	for _, p := range balancer.Protocols() {
		n += int(g.bal.Started(p) - g.bal.Ended(p))
	}
	return n
}

// drainer is a front end that can stop accepting and wait for its
// connections without telling anyone (SSH, RDP).
type drainer interface{ Drain(context.Context) error }

// retireFrontEnds stops every front end from accepting: the SSH and RDP
// gateways wait for their sessions until upgrade_timeout or until ctx
// ends (a SIGTERM); the others shut down within shutdown_timeout. Whatever
// is left is then stopped by serveFrontEnds as on any stop.
func (g *Gateway) retireFrontEnds(ctx context.Context) {
	uctx, cancel := context.WithTimeout(ctx, g.config().UpgradeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	if g.rdg != nil {
		// Desktops through the RD Gateway are waited for as RDP's are.
		wg.Go(func() { _ = g.rdg.Drain(uctx) })
	}
	for _, f := range g.fronts {
		wg.Go(func() {
			if d, ok := f.srv.(drainer); ok {
				_ = d.Drain(uctx)
				return
			}
			sctx, cancel := context.WithTimeout(context.Background(), g.config().ShutdownTimeout)
			defer cancel()
			if err := f.srv.Shutdown(sctx); err != nil {
				_ = f.srv.Close()
			}
		})
	}
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		g.log.Info("upgrade: told to stop; ending the sessions left as a stop does")
	case uctx.Err() != nil:
		g.log.Info("upgrade: upgrade_timeout passed; ending the sessions left as a stop does", zap.Duration("upgrade_timeout", g.config().UpgradeTimeout), zap.Int("sessions", len(g.bal.Sessions())))
	default:
		g.log.Info("upgrade: last session ended; exiting")
	}
}

// handoverListener is a front end's listener that says when it is
// closed, so that Retire can return once accepting has stopped.
type handoverListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func newHandoverListener(ln net.Listener) *handoverListener {
	return &handoverListener{Listener: ln, closed: make(chan struct{})}
}

func (l *handoverListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// handoverPoll is how often the old process looks for sessions that
// started or ended, to tell the new one.
const handoverPoll = 200 * time.Millisecond

// WriteHandover tells the new process this gateway's pins and sessions
// (with shared state, which holds both already: nothing but "go"), then,
// until ctx ends, each session that starts (a login under way at the
// handover) or ends. Call it after Retire. It closes w when it returns.
func (g *Gateway) WriteHandover(ctx context.Context, w io.WriteCloser) error {
	defer w.Close()
	shared := g.shared != nil
	sent := map[uint64]bool{}
	write := func(m handoverMsg) error {
		_, err := w.Write(encodeHandover(m))
		return err
	}
	sync := func() error {
		if shared {
			return nil
		}
		live := map[uint64]bool{}
		for _, s := range g.bal.Sessions() {
			live[s.ID] = true
			if sent[s.ID] {
				continue
			}
			sent[s.ID] = true
			if err := write(handoverMsg{kind: handoverSession, session: handoverSessionMsg{ID: s.ID, User: s.User, Node: s.Node, Protocol: s.Protocol, Client: s.Client, Started: s.Started}}); err != nil {
				return err
			}
		}
		for id := range sent {
			if !live[id] {
				delete(sent, id)
				if err := write(handoverMsg{kind: handoverEnd, id: id}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if !shared {
		for _, p := range g.bal.Pins() {
			if err := write(handoverMsg{kind: handoverPin, pin: handoverPinMsg{User: p.User, Node: p.Node, By: p.By, Until: p.Until}}); err != nil {
				return err
			}
		}
	}
	if err := sync(); err != nil {
		return err
	}
	if err := write(handoverMsg{kind: handoverGo}); err != nil {
		return err
	}
	t := time.NewTicker(handoverPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return sync()
		case <-t.C:
			if err := sync(); err != nil {
				return err
			}
		}
	}
}

// handoverWait bounds how long the new process waits for the snapshot,
// and then for discovery to list the nodes the sessions are on.
const (
	handoverSnapshotWait = 30 * time.Second
	handoverNodesWait    = 10 * time.Second
)

// adoption is the new process's record of the old one's sessions: its
// session ID → the lease adopted for it.
type adoption struct {
	g      *Gateway
	leases map[uint64]*balancer.Lease
}

// takeOver reads the handover snapshot, waits for discovery to know the
// sessions' nodes, adopts the pins and sessions and logs what it took.
// It returns what follows the snapshot for follow; nil when there is no
// handover.
func (g *Gateway) takeOver(ctx context.Context) (*adoption, *handoverReader) {
	if g.handover == nil {
		return nil, nil
	}
	r := newHandoverReader(g.handover)
	var pins []handoverPinMsg
	var sessions []handoverSessionMsg
	got := make(chan error, 1)
	go func() {
		for {
			m, err := r.next()
			if err != nil {
				got <- err
				return
			}
			switch m.kind {
			case handoverPin:
				pins = append(pins, m.pin)
			case handoverSession:
				sessions = append(sessions, m.session)
			case handoverGo:
				got <- nil
				return
			default:
				got <- fmt.Errorf("an %q line before the snapshot was complete", m.kind)
				return
			}
		}
	}()
	var err error
	select {
	case err = <-got:
	case <-time.After(handoverSnapshotWait):
		err = errors.New("no snapshot within 30s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	var inherited []string
	for _, f := range g.fronts {
		if f.inherited {
			inherited = append(inherited, f.name+" "+f.ln.Addr().String())
		}
	}
	if err != nil {
		g.handover.Close()
		g.log.Error("upgrade: took over listeners but no snapshot of pins and sessions from the old process; serving without them", zap.Strings("listeners", inherited), zap.Error(err))
		return nil, nil
	}
	a := &adoption{g: g, leases: map[uint64]*balancer.Lease{}}
	g.waitForNodes(ctx, pins, sessions)
	np := 0
	for _, p := range pins {
		if err := g.bal.AdoptPin(p.User, p.Node, p.By, p.Until); err != nil {
			g.log.Warn("upgrade: pin not adopted", zap.String("user", p.User), zap.String("node", p.Node), zap.Error(err))
			continue
		}
		np++
	}
	for _, s := range sessions {
		a.adopt(s)
	}
	g.log.Info(fmt.Sprintf("upgrade: took over listeners %v; adopted %d pins and %d sessions", inherited, np, len(a.leases)),
		zap.Strings("listeners", inherited), zap.Int("pins", np), zap.Int("sessions", len(a.leases)), zap.Int("pid", os.Getpid()))
	return a, r
}

func (a *adoption) adopt(s handoverSessionMsg) {
	if a.leases[s.ID] != nil {
		return
	}
	var l *balancer.Lease
	var err error
	if s.User == balancer.Unverified {
		// A plain RDP connection: counted on its node, for no one.
		l, err = a.g.bal.Hold(s.Node, s.Protocol, s.Client)
	} else {
		l, err = a.g.bal.Adopt(s.User, s.Node, s.Protocol, s.Client, s.Started, balancer.ByBalancer)
	}
	if err != nil {
		a.g.log.Warn("upgrade: session of the old process not adopted", zap.Uint64("session_id", s.ID), zap.String("user", s.User), zap.String("node", s.Node), zap.Error(err))
		return
	}
	a.leases[s.ID] = l
}

// follow adopts the sessions the old process starts and releases those
// it ends, until the pipe closes (the old process exited: every adopted
// lease left is released) or Run closes it.
func (a *adoption) follow(r *handoverReader) {
	defer func() {
		for _, l := range a.leases {
			l.Release()
		}
		a.g.log.Info("upgrade: the old process is gone; its sessions are released", zap.Int("released", len(a.leases)))
	}()
	for {
		m, err := r.next()
		if err != nil {
			if err != io.EOF && !errors.Is(err, os.ErrClosed) {
				a.g.log.Warn("upgrade: reading from the old process", zap.Error(err))
			}
			return
		}
		switch m.kind {
		case handoverSession:
			a.adopt(m.session)
		case handoverEnd:
			if l := a.leases[m.id]; l != nil {
				l.Release()
				delete(a.leases, m.id)
			}
		}
	}
}

// waitForNodes waits until discovery has listed every node the handover
// names and the health checks have judged each node listed once, or
// handoverNodesWait passes: the old process accepted logins until a
// moment ago, and this one should not refuse one (no node up yet) while
// its first checks run. Connections meanwhile wait in the backlog.
func (g *Gateway) waitForNodes(ctx context.Context, pins []handoverPinMsg, sessions []handoverSessionMsg) {
	want := map[string]bool{}
	for _, p := range pins {
		want[p.Node] = true
	}
	for _, s := range sessions {
		want[s.Node] = true
	}
	deadline := time.Now().Add(handoverNodesWait)
	for {
		unchecked := 0
		for _, n := range g.bal.Nodes() {
			delete(want, n.Name)
			if !n.Check(balancer.SSH).Checked {
				unchecked++
			}
		}
		if (len(want) == 0 && unchecked == 0) || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
