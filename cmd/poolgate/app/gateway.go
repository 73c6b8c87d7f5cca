package app

import (
	"context"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure"
	"github.com/poolgate/poolgate/discovery/load"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/gateway/httpgw"
	"github.com/poolgate/poolgate/gateway/rdg"
	"github.com/poolgate/poolgate/gateway/recording"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

// Gateway is a wired poolgate: balancer, discovery, health checks and the
// front ends (SSH, admin API, and HTTP and RDP when configured). New binds
// the listeners, so that a busy port is reported at start; Run serves
// until its context ends.
type Gateway struct {
	cfgMu   sync.Mutex // protects cfg once Run began (Reload replaces it)
	cfg     Config
	log     *zap.Logger
	bal     *balancer.Balancer
	keys    *sshgw.Keys
	fronts  []*frontEnd // in the order they listen
	checker *discovery.Checker
	source  discovery.Source

	http     *httpgw.Server // nil when http.listen is empty
	ssh      *sshgw.Server
	api      *admin.Server
	static   *discovery.StaticSource // with discovery.static; replaced by Reload
	hubCheck *discovery.Checker
	azure    *azure.Source     // nil unless discovery.azure
	shared   *redisstate.Store // nil unless state.redis
	identity *signIn           // nil unless identity.oidc.issuer
	reg      *prometheus.Registry
	frontM   *gwmetrics.Set // the front ends' shared families in reg

	load        *load.Scraper // the nodes' exporters
	loadTargets loadTargets

	rdpCheck *discovery.Checker // nil unless rdp.listen or rdp.gateway.enabled
	rdg      *rdg.Server        // nil unless rdp.gateway.enabled
	// recordings is the session recordings' store; nil unless
	// recording.enabled.
	recordings *recording.Store

	// The upgrade (upgrade.go): listeners inherited from the gateway this
	// one took over from, by front end, until listen takes them; the pipe
	// its handover comes on (nil unless there is one); retiring is closed
	// once by Retire.
	inherited  map[string]InheritedListener
	handover   io.ReadCloser
	retiring   chan struct{}
	retireOnce sync.Once
}

// azureStatus reports the scale set's discovery for the admin API.
func azureStatus(az *azure.Source) admin.Discovery {
	return func() admin.DiscoveryJSON {
		st := az.Status()
		d := admin.DiscoveryJSON{Source: "azure", Stale: st.Stale(), Error: st.Error, Instances: st.Instances, Live: st.Live, Starting: st.Starting}
		if !st.LastSuccess.IsZero() {
			t := st.LastSuccess.UTC()
			d.LastSuccess = &t
		}
		for name := range az.Protected() {
			d.Protected = append(d.Protected, name)
		}
		sort.Strings(d.Protected)
		if c := az.CapacityStatus(); c.On {
			cj := &admin.CapacityJSON{Leading: c.Leading, WarmSpares: c.WarmSpares, Spares: c.Spares, Starting: c.Starting, LastAction: c.LastAction, Error: c.Error}
			if !c.LastActionAt.IsZero() {
				t := c.LastActionAt.UTC()
				cj.LastActionAt = &t
			}
			d.Capacity = cj
		}
		return d
	}
}

// AzureScaler adapts the Azure source to the admin API's scale-in.
func AzureScaler(az *azure.Source) admin.Scaler { return scaler{az} }

type scaler struct{ az *azure.Source }

func (s scaler) ScaleIn(ctx context.Context, idle time.Duration, keep int, dryRun bool) (admin.ScaleInJSON, error) {
	res, err := s.az.ScaleIn(ctx, idle, keep, dryRun)
	return admin.ScaleInJSON{DryRun: res.DryRun, Deleted: scaleInNodes(res.Deleted), Kept: scaleInNodes(res.Kept)}, err
}

func scaleInNodes(ns []azure.ScaleInNode) []admin.ScaleInNodeJSON {
	out := make([]admin.ScaleInNodeJSON, 0, len(ns))
	for _, n := range ns {
		out = append(out, admin.ScaleInNodeJSON{Node: n.Node, InstanceID: n.InstanceID, Idle: n.Idle, Reason: n.Reason})
	}
	return out
}

// config is the config in force; Run's goroutines read it here, as a
// reload may replace it.
func (g *Gateway) config() Config {
	g.cfgMu.Lock()
	defer g.cfgMu.Unlock()
	return g.cfg
}

// HTTPAddr is the address the HTTP gateway listens on, "" when it is off.
func (g *Gateway) HTTPAddr() string { return g.listenAddr("http") }

// RDPAddr is the address the RDP gateway listens on, "" when it is off.
func (g *Gateway) RDPAddr() string { return g.listenAddr("rdp") }

// SSHAddr is the address the SSH gateway listens on.
func (g *Gateway) SSHAddr() string { return g.listenAddr("ssh") }

// AdminAddr is the address the admin API listens on.
func (g *Gateway) AdminAddr() string { return g.listenAddr("admin") }

// MetricsAddr is the address admin.metrics_listen is bound to, "" when it
// is off.
func (g *Gateway) MetricsAddr() string { return g.listenAddr("metrics") }

// Balancer gives access to the routing state (for ops views and tests).
func (g *Gateway) Balancer() *balancer.Balancer { return g.bal }

// CALine is the line for the nodes' TrustedUserCAKeys file.
func (g *Gateway) CALine() string { return sshgw.AuthorizedCALine(g.keys.CA) }

// Run serves until ctx ends, then stops accepting, gives open sessions up
// to shutdown_timeout to end, closes the rest and returns. It returns nil
// after a requested stop, or the error that stopped it.
func (g *Gateway) Run(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	fan := discovery.Fanout{g.bal, g.checker, g.loadTargets}
	wg.Add(1)
	go func() { defer wg.Done(); g.runLoad(bg) }()
	for _, c := range []*discovery.Checker{g.rdpCheck, g.hubCheck} {
		if c != nil {
			fan = append(fan, c)
			wg.Add(1)
			go func() { defer wg.Done(); c.Run(bg) }()
		}
	}
	if g.shared != nil {
		wg.Add(1)
		go func() { defer wg.Done(); g.bal.RunShared(bg) }()
	}
	if g.azure != nil && g.cfg.Capacity.Enabled() {
		wg.Add(1)
		go func() { defer wg.Done(); g.runCapacity(bg) }()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := g.source.Run(bg, fan); err != nil {
			g.log.Error("discovery stopped", zap.Error(err))
		}
	}()
	go func() { defer wg.Done(); g.checker.Run(bg) }()

	if a, r := g.takeOver(ctx); a != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.follow(r) }()
	}
	err := g.serveFrontEnds(ctx)
	if g.handover != nil {
		g.handover.Close()
	}
	stopBG()
	wg.Wait()
	if g.shared != nil {
		lctx, lcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if lerr := g.bal.LeaveShared(lctx); lerr != nil {
			g.log.Warn("could not clear this gateway's sessions from Redis; they expire after lease_ttl", zap.Error(lerr))
		}
		lcancel()
		_ = g.shared.Close()
	}
	return err
}
