package app

import (
	"fmt"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/gateway/rdpgw"
)

// buildRDP makes, with rdp.listen, the plain RDP front end, and with it
// or the RD Gateway (rdp.gateway.enabled) the nodes' RDP health checks.
func (g *Gateway) buildRDP() error {
	cfg := g.cfg
	if cfg.RDP.Enabled() || cfg.RDP.Gateway.Enabled {
		g.rdpCheck = discovery.NewRDPChecker(cfg.Health, g.bal, discovery.CheckerOptions{
			Logger: g.log.Named("health_checker.rdp"), Metrics: g.reg,
		})
	}
	if !cfg.RDP.Enabled() {
		return nil
	}
	srv, err := rdpgw.New(cfg.RDP, g.bal, rdpgw.Options{Logger: g.log.Named("rdp"),
		Metrics: g.frontM.Front(balancer.RDP, gwmetrics.NoNode, gwmetrics.NodeUnreachable, gwmetrics.TooManyUnauthentic)})
	if err != nil {
		return fmt.Errorf("rdp.%w", err)
	}
	g.addFrontEnd(frontEnd{name: "rdp", addr: cfg.RDP.Listen, srv: srv, closed: rdpgw.ErrServerClosed})
	return nil
}
