package app

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/rdpgw"
)

// buildRDP makes, with rdp.listen, the RDP gateway, its listener and the
// nodes' RDP health checks. It runs last of New's steps, so that nothing
// after it can fail and leave its listener open.
func (g *Gateway) buildRDP() error {
	cfg := g.cfg
	if !cfg.RDP.Enabled() {
		return nil
	}
	srv, err := rdpgw.New(cfg.RDP, g.bal, rdpgw.Options{Logger: g.log.Named("rdp")})
	if err != nil {
		return fmt.Errorf("rdp.%w", err)
	}
	ln, err := listenOn("rdp.listen", cfg.RDP.Listen)
	if err != nil {
		return err
	}
	g.rdp, g.rdpLn = srv, ln
	g.rdpCheck = discovery.NewRDPChecker(cfg.Health, g.bal, discovery.CheckerOptions{
		Logger: g.log.Named("health_checker.rdp"), Metrics: g.reg,
	})
	return nil
}

// startRDP, with the RDP gateway on, adds its checker to the node-set
// fanout and starts the checker (until bg ends) and the gateway (until
// stopRDP), counting both in wg.
func (g *Gateway) startRDP(bg context.Context, wg *sync.WaitGroup, fan *discovery.Fanout) {
	if g.rdp == nil {
		return
	}
	*fan = append(*fan, g.rdpCheck)
	wg.Add(2)
	go func() { defer wg.Done(); g.rdpCheck.Run(bg) }()
	go func() {
		defer wg.Done()
		if err := g.rdp.Serve(g.rdpLn); err != nil && !errors.Is(err, rdpgw.ErrServerClosed) {
			g.log.Error("RDP gateway stopped", zap.Error(err))
		}
	}()
}

// stopRDP stops the RDP gateway: open connections get until ctx ends,
// then are closed. It counts itself in wg.
func (g *Gateway) stopRDP(ctx context.Context, wg *sync.WaitGroup) {
	if g.rdp == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := g.rdp.Shutdown(ctx); err != nil {
			g.log.Info("closed RDP connections still open at the shutdown timeout")
		}
	}()
}

// RDPAddr is the address the RDP gateway listens on, "" when it is off.
func (g *Gateway) RDPAddr() string {
	if g.rdpLn == nil {
		return ""
	}
	return g.rdpLn.Addr().String()
}
