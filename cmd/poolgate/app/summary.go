package app

import (
	"fmt"
	"strings"
)

// Summary says in one line what a config would serve: the listeners, the
// nodes, and the features that are on. It reads only the config.
func (c Config) Summary() string {
	c = c.WithDefaults()
	var ls []string
	ls = append(ls, "ssh "+c.SSH.Listen)
	if c.HTTP.Enabled() {
		tls := "tls"
		if c.HTTP.TLS != nil && !*c.HTTP.TLS {
			tls = "plain http"
		}
		ls = append(ls, fmt.Sprintf("http %s (%s)", c.HTTP.Listen, tls))
	}
	if c.RDP.Enabled() {
		ls = append(ls, "plain rdp "+c.RDP.Listen)
	}
	if c.Admin.Listen != "" {
		ls = append(ls, "admin "+c.Admin.Listen)
	}
	var nodes string
	if a := c.Discovery.Azure; a != nil {
		nodes = fmt.Sprintf("nodes from Azure scale set %s/%s (listed at start)", a.ResourceGroup, a.ScaleSet)
	} else {
		n := len(c.Discovery.Static)
		nodes = fmt.Sprintf("%d static node", n)
		if n != 1 {
			nodes += "s"
		}
	}
	var on []string
	if c.SSH.AuthorizedKeys != "" {
		on = append(on, "keys from "+string(c.SSH.AuthorizedKeys))
	}
	if c.SSH.PasswordPassthrough {
		on = append(on, "password passthrough")
	}
	if c.Load.Max != nil && *c.Load.Max > 0 {
		on = append(on, fmt.Sprintf("placement by load (max %v)", *c.Load.Max))
	}
	if c.Identity.Enabled() {
		on = append(on, "identity sign-in ("+c.Identity.OIDC.Issuer+")")
	}
	if c.RDP.Gateway.Enabled {
		on = append(on, "RD Gateway on the http port")
	}
	if c.Recording.Enabled {
		on = append(on, "session recording")
	}
	if c.Capacity.Enabled() {
		on = append(on, fmt.Sprintf("capacity (%d warm spares, at most %d instances)", c.Capacity.WarmSpares, c.Capacity.MaxInstances))
	}
	if c.State.Enabled() {
		on = append(on, "shared state (Redis)")
	}
	if c.CA.KeyVault != nil {
		on = append(on, "user CA in Key Vault")
	}
	if c.Balancer.MaxSessionsPerNode > 0 {
		on = append(on, fmt.Sprintf("at most %d sessions per node", c.Balancer.MaxSessionsPerNode))
	}
	features := "features: none"
	if len(on) > 0 {
		features = "features: " + strings.Join(on, ", ")
	}
	return fmt.Sprintf("%s; %s; %s; state_dir %s", strings.Join(ls, ", "), nodes, features, c.StateDir)
}
