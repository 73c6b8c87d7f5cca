package app

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/load"
	"github.com/poolgate/poolgate/gateway/httpgw"
	"go.uber.org/zap"
)

// ReloadReport says what a reload put in force and what waits for a
// restart, with why.
type ReloadReport struct {
	Applied     []string // "discovery.static: 4 nodes", "ssh", ...
	NeedRestart []string // "ssh.listen: a listener is bound at start", ...
}

// reloadMu makes reloads one at a time.
var reloadMu sync.Mutex

// Reload puts next (read and checked by LoadConfig) in force where it can
// change while sessions run (SIGHUP): the static node list, the
// balancer's limits and load rules, the health checks' settings, the SSH gateway's settings for new
// connections (keys, passwords, limits, algorithms, node choice,
// timeouts), the admin tokens, the nodes' known host keys (a line deleted
// after a node's rebuild is forgotten) and the HTTP certificate. What
// cannot change live is listed with the reason and keeps its running
// value; a reload never ends a session. On an error nothing changed.
func (g *Gateway) Reload(next Config) (ReloadReport, error) {
	reloadMu.Lock()
	defer reloadMu.Unlock()
	var r ReloadReport
	cur := g.config()
	restart := func(key, why string) { r.NeedRestart = append(r.NeedRestart, key+": "+why) }
	differ := func(a, b any) bool { return !reflect.DeepEqual(a, b) }

	// What is made at start.
	if next.StateDir != cur.StateDir {
		restart("state_dir", "keys and state are opened at start")
	}
	if next.SSH.Listen != cur.SSH.Listen {
		restart("ssh.listen", "a listener is bound at start")
	}
	if differ(withoutFingerprints(next.HTTP), withoutFingerprints(cur.HTTP)) {
		restart("http", "the HTTP front end is made at start (its certificate files and hub fingerprints are read again now)")
	}
	if differ(next.RDP, cur.RDP) {
		restart("rdp", "the RDP front end is made at start")
	}
	if differ(next.State, cur.State) {
		restart("state", "the shared state is opened at start")
	}
	if differ(next.CA, cur.CA) {
		restart("ca", "the user CA is opened at start")
	}
	if differ(next.Capacity, cur.Capacity) {
		restart("capacity", "the capacity controller is started with its settings")
	}
	if differ(next.Recording, cur.Recording) {
		restart("recording", "the recordings' store is opened at start")
	}
	liveIdentity := false
	if differ(next.Identity, cur.Identity) {
		if g.identity == nil || !next.Identity.Enabled() {
			restart("identity", "turning sign-in on or off is done at start")
		} else {
			liveIdentity = true
		}
	}
	liveHealth := differ(withoutRepin(next.Health), withoutRepin(cur.Health))
	if (next.Discovery.Azure == nil) != (cur.Discovery.Azure == nil) || (next.Discovery.Azure != nil && differ(*next.Discovery.Azure, *cur.Discovery.Azure)) {
		restart("discovery.azure", "the scale set is opened at start")
	}
	liveLoad := false
	if differ(scraperPart(next.Load), scraperPart(cur.Load)) {
		if differ(portsOf(next.Load), portsOf(cur.Load)) {
			restart("load.metrics_port, load.gpu_metrics_port", "the exporters' ports are set at start (a node's own metrics address in discovery.static changes now)")
		}
		liveLoad = differ(timingOf(next.Load), timingOf(cur.Load))
	}
	if next.ShutdownTimeout != cur.ShutdownTimeout {
		restart("shutdown_timeout", "read when the gateway stops; the running value stays")
	}
	if next.UpgradeTimeout != cur.UpgradeTimeout {
		restart("upgrade_timeout", "read when the gateway hands over to a new binary; the running value stays (the new binary reads the file)")
	}

	// What changes live. The admin tokens go first: reading their files
	// is what can still fail.
	adminRestart, err := g.api.SetConfig(next.Admin)
	if err != nil {
		return ReloadReport{}, fmt.Errorf("admin.%w", err)
	}
	for _, k := range adminRestart {
		restart("admin."+k, "a listener is bound at start")
	}
	r.Applied = append(r.Applied, "admin tokens (files read again)")
	sshRestart, err := g.ssh.SetConfig(next.SSH)
	if err != nil {
		return r, fmt.Errorf("ssh.%w", err)
	}
	for _, k := range sshRestart {
		restart("ssh."+k, "made at start")
	}
	if differ(next.SSH, cur.SSH) {
		r.Applied = append(r.Applied, "ssh (for new connections)")
	}
	if liveIdentity {
		idRestart, err := g.identity.p.SetConfig(next.Identity)
		if err != nil {
			return r, fmt.Errorf("identity.%w", err)
		}
		for _, k := range idRestart {
			restart("identity."+k, "made at start")
		}
		r.Applied = append(r.Applied, "identity (groups, name mapping, key_ttl, provider)")
	}
	if liveLoad && g.load != nil {
		if err := g.load.SetConfig(next.Load); err != nil {
			return r, fmt.Errorf("load.%w", err)
		}
		r.Applied = append(r.Applied, "load.interval, load.timeout (from the next scrape)")
	}
	if liveHealth {
		for _, c := range []*discovery.Checker{g.checker, g.hubCheck, g.rdpCheck} {
			if c != nil {
				c.SetConfig(next.Health)
			}
		}
		r.Applied = append(r.Applied, "health (each node's checks from their next probe)")
	}
	if differ(next.Balancer, cur.Balancer) {
		g.bal.SetConfig(next.Balancer)
		r.Applied = append(r.Applied, "balancer, load rules, health.repin_after")
	}
	if g.static != nil && next.Discovery.Azure == nil && differ(next.Discovery.Static, cur.Discovery.Static) {
		g.static.Set(next.Discovery.Static)
		r.Applied = append(r.Applied, fmt.Sprintf("discovery.static: %d nodes", len(next.Discovery.Static)))
	}
	if forgotten, err := g.keys.KnownHosts.Reload(); err != nil {
		g.log.Error("reload: the nodes' known host keys do not parse; the keys in use stay", zap.Error(err))
		restart("state_dir/node_host_keys", err.Error())
	} else if len(forgotten) > 0 {
		r.Applied = append(r.Applied, "node host keys forgotten for "+strings.Join(forgotten, ", ")+" (learnt again on first contact)")
	}
	if g.http != nil {
		if forgotten, err := g.http.ReloadFingerprints(next.HTTP); err != nil {
			g.log.Error("reload: the hubs' certificate fingerprints do not parse; the ones in use stay", zap.Error(err))
			restart("http.upstream_fingerprints", err.Error())
		} else if len(forgotten) > 0 {
			r.Applied = append(r.Applied, "hub certificate fingerprints forgotten for "+strings.Join(forgotten, ", ")+" (learnt again on first contact)")
		}
		if err := g.http.Reload(); err != nil {
			return r, errors.Join(errors.New("http: the certificate did not load; the previous one is served"), err)
		}
	}
	// What is kept: the running config, with the parts applied now.
	applied := cur
	applied.SSH, applied.Admin, applied.Balancer, applied.Health = next.SSH, next.Admin, next.Balancer, next.Health
	if liveLoad {
		applied.Load.Interval, applied.Load.Timeout = next.Load.Interval, next.Load.Timeout
	}
	applied.HTTP.UpstreamFingerprints, applied.HTTP.UpstreamPins = next.HTTP.UpstreamFingerprints, next.HTTP.UpstreamPins
	if liveIdentity {
		applied.Identity = next.Identity
	}
	if g.static != nil && next.Discovery.Azure == nil {
		applied.Discovery.Static = next.Discovery.Static
	}
	g.cfgMu.Lock()
	g.cfg = applied
	g.cfgMu.Unlock()
	return r, nil
}

// withoutFingerprints is h without the hubs' fingerprints (which a reload
// reads again), to compare the rest.
func withoutFingerprints(h httpgw.Config) httpgw.Config {
	h.UpstreamFingerprints, h.UpstreamPins = nil, nil
	return h
}

// withoutRepin is h without repin_after (which the balancer takes live),
// to compare the rest.
func withoutRepin(h discovery.HealthConfig) discovery.HealthConfig {
	h.RepinAfter = 0
	return h
}

// scraperPart is what the load scraper reads: not Max and SessionCost,
// which the balancer takes.
func scraperPart(c load.Config) load.Config {
	c.Max, c.SessionCost, c.PackTarget = nil, 0, 0
	return c
}

// portsOf is the exporters' ports of c (set at start), timingOf its
// interval and timeout (live).
func portsOf(c load.Config) [2]any { return [2]any{c.MetricsPort, c.GPUMetricsPort} }

func timingOf(c load.Config) [2]time.Duration {
	c = c.WithDefaults()
	return [2]time.Duration{c.Interval, c.Timeout}
}
