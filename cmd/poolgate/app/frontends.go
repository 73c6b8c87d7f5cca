package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"go.uber.org/zap"
)

// server is what the gateway needs of a front end: the SSH, HTTP and RDP
// gateways and the admin API's http.Server all have it.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// frontEnd is one of the gateway's listening servers. New lists them
// (addFrontEnd) and binds their listeners (listen); Run starts them all
// and stops them all (serveFrontEnds). A new front end is one more entry.
type frontEnd struct {
	name string // its config section: ssh, http, rdp, admin; or metrics
	key  string // its listen address's key in errors; "" means name.listen
	addr string // its listen address
	srv  server
	ln   *handoverListener // bound (or inherited) by listen
	// inherited: ln came from the gateway this one took over from.
	inherited bool
	closed    error // what Serve returns once stopped
	// vital: when Serve fails, the whole gateway stops (the SSH gateway);
	// the failure of another front end is logged and the rest go on.
	vital bool
	// closeLast: it serves until the others have stopped and is then
	// closed at once (the admin API: ops watch the drain through it).
	closeLast bool
}

func (g *Gateway) addFrontEnd(f frontEnd) { g.fronts = append(g.fronts, &f) }

// listen binds every front end's listener, in the order they were added,
// so that a busy port is reported at start, naming its key. A listener
// inherited from the gateway this one took over from (WithListeners) is
// used as it is when its front end's address is still the one it was
// bound for; an inherited listener no front end takes is closed.
func (g *Gateway) listen() error {
	for _, f := range g.fronts {
		if in, ok := g.inherited[f.name]; ok && in.Addr == f.addr {
			delete(g.inherited, f.name)
			f.ln, f.inherited = newHandoverListener(in.Listener), true
			continue
		}
		ln, err := net.Listen("tcp", f.addr)
		if err != nil {
			key := f.key
			if key == "" {
				key = f.name + ".listen"
			}
			return fmt.Errorf("%s: %w", key, err)
		}
		f.ln = newHandoverListener(ln)
	}
	for name, in := range g.inherited {
		g.log.Info("upgrade: closing an inherited listener the config no longer has", zap.String("front_end", name), zap.String("addr", in.Addr))
		in.Listener.Close()
		delete(g.inherited, name)
	}
	return nil
}

// listenAddr is the address front end name listens on, "" when it is
// off.
func (g *Gateway) listenAddr(name string) string {
	for _, f := range g.fronts {
		if f.name == name && f.ln != nil {
			return f.ln.Addr().String()
		}
	}
	return ""
}

// closeListeners closes the listeners that listen bound (for a New that
// failed: the front ends never served).
func (g *Gateway) closeListeners() {
	for _, f := range g.fronts {
		if f.ln != nil {
			f.ln.Close()
		}
	}
	for _, in := range g.inherited {
		in.Listener.Close()
	}
}

// ended is what a front end's Serve returned.
type ended struct {
	f   *frontEnd
	err error
}

// serveFrontEnds serves every front end until ctx ends or a vital one
// fails, then stops them: all but the closeLast ones at once, each given
// until shutdown_timeout for its connections to end before it closes
// them; then the closeLast ones. It returns the vital front end's error,
// if one failed.
func (g *Gateway) serveFrontEnds(ctx context.Context) error {
	done := make(chan ended, len(g.fronts))
	for _, f := range g.fronts {
		go func() { done <- ended{f, f.srv.Serve(f.ln)} }()
	}
	serving := len(g.fronts)
	var err error
wait:
	for serving > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-g.retiring:
			g.retireFrontEnds(ctx)
			break wait
		case e := <-done:
			serving--
			if err = g.frontEndEnded(e); err != nil {
				break wait
			}
		}
	}
	timeout := g.config().ShutdownTimeout
	g.log.Info("shutting down", zap.Duration("timeout", timeout))
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	g.stopFrontEnds(sctx, false)
	g.stopRDGateway(sctx)
	g.stopFrontEnds(sctx, true)
	for ; serving > 0; serving-- {
		if ferr := g.frontEndEnded(<-done); err == nil {
			err = ferr
		}
	}
	return err
}

// frontEndEnded returns the error of a vital front end that stopped on
// its own, and logs that of any other.
func (g *Gateway) frontEndEnded(e ended) error {
	switch {
	case e.err == nil || errors.Is(e.err, e.f.closed):
		return nil
	case e.f.vital:
		return e.err
	}
	g.log.Error("front end stopped; the others go on", zap.String("front_end", e.f.name), zap.Error(e.err))
	return nil
}

// stopFrontEnds stops, in parallel, the front ends whose closeLast is
// last: the closeLast ones are closed at once, the others shut down with
// until ctx ends for their connections, and then closed.
func (g *Gateway) stopFrontEnds(ctx context.Context, last bool) {
	var wg sync.WaitGroup
	for _, f := range g.fronts {
		if f.closeLast != last {
			continue
		}
		wg.Go(func() {
			if last {
				_ = f.srv.Close()
				return
			}
			if err := f.srv.Shutdown(ctx); err != nil {
				g.log.Info("closed connections still open at the shutdown timeout", zap.String("front_end", f.name))
				_ = f.srv.Close()
			}
		})
	}
	wg.Wait()
}

// adminServer is the admin API's http.Server; it says where it listens,
// as the gateways do.
type adminServer struct {
	*http.Server
	log *zap.Logger
}

func (a adminServer) Serve(ln net.Listener) error {
	a.log.Info("admin API listening", zap.String("addr", ln.Addr().String()))
	return a.Server.Serve(ln)
}

// metricsServer is admin.metrics_listen's http.Server: HTTPS when it has
// a TLSConfig.
type metricsServer struct {
	*http.Server
	log *zap.Logger
}

func (m metricsServer) Serve(ln net.Listener) error {
	m.log.Info("metrics listening", zap.String("addr", ln.Addr().String()), zap.Bool("tls", m.TLSConfig != nil))
	if m.TLSConfig != nil {
		return m.ServeTLS(ln, "", "")
	}
	return m.Server.Serve(ln)
}
