package deploy

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// nsgRule is one evaluated security rule, as Azure applies it.
type nsgRule struct {
	name     string
	priority int64
	allow    bool
	inbound  bool
	sources  []string
	ports    []string
}

func nsgRules(t *testing.T, ev evaluated, nsgName string) []nsgRule {
	t.Helper()
	for _, nsg := range ev.resources("Microsoft.Network/networkSecurityGroups") {
		if nsg["name"] != nsgName {
			continue
		}
		var out []nsgRule
		rules, _ := dig(nsg, "properties", "securityRules").([]any)
		for _, r := range rules {
			p, _ := dig(r, "properties").(map[string]any)
			rule := nsgRule{name: fmt.Sprint(dig(r, "name")), allow: p["access"] == "Allow", inbound: p["direction"] == "Inbound"}
			rule.priority, _ = p["priority"].(int64)
			if s, ok := p["sourceAddressPrefix"].(string); ok {
				rule.sources = append(rule.sources, s)
			}
			if l, ok := p["sourceAddressPrefixes"].([]any); ok {
				for _, s := range l {
					rule.sources = append(rule.sources, fmt.Sprint(s))
				}
			}
			if s, ok := p["destinationPortRange"].(string); ok {
				rule.ports = append(rule.ports, s)
			}
			if l, ok := p["destinationPortRanges"].([]any); ok {
				for _, s := range l {
					rule.ports = append(rule.ports, fmt.Sprint(s))
				}
			}
			out = append(out, rule)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].priority < out[j].priority })
		return out
	}
	t.Fatalf("no network security group %s", nsgName)
	return nil
}

// nsgAllows says whether the rules let TCP from src reach port, as Azure
// decides: the rule with the lowest priority number that matches wins;
// without one, Azure's defaults allow traffic from inside the VNet
// (10.20.0.0/16 here) and from Azure's load balancer, and deny the rest.
func nsgAllows(t *testing.T, rules []nsgRule, src string, port int) (bool, string) {
	t.Helper()
	addr := netip.MustParseAddr(src)
	for _, r := range rules {
		if !r.inbound || !matchesAny(t, r.sources, addr) || !portIn(t, r.ports, port) {
			continue
		}
		return r.allow, r.name
	}
	return netip.MustParsePrefix("10.20.0.0/16").Contains(addr), "AllowVnetInBound (Azure's default)"
}

func matchesAny(t *testing.T, prefixes []string, addr netip.Addr) bool {
	for _, s := range prefixes {
		switch s {
		case "*", "Internet", "Any":
			return true
		case "VirtualNetwork":
			if netip.MustParsePrefix("10.20.0.0/16").Contains(addr) {
				return true
			}
			continue
		}
		if !strings.Contains(s, "/") {
			s += "/32"
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatalf("NSG source %q: %v", s, err)
		}
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func portIn(t *testing.T, ranges []string, port int) bool {
	for _, r := range ranges {
		if r == "*" {
			return true
		}
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil {
			t.Fatalf("NSG port range %q", r)
		}
		if port >= a && port <= b {
			return true
		}
	}
	return false
}

// Addresses the NSG tests try: a gateway, another node, and the internet.
const (
	gatewayAddr  = "10.20.0.4"
	otherNode    = "10.20.1.9"
	internetAddr = "198.51.100.20"
)

// checkOnlyGateways fails unless the nodes' NSG lets the gateways, and
// only them, reach each port.
func checkOnlyGateways(t *testing.T, ev evaluated, ports ...int) {
	t.Helper()
	rules := nsgRules(t, ev, "nodes-nsg")
	for _, port := range ports {
		if ok, rule := nsgAllows(t, rules, gatewayAddr, port); !ok {
			t.Errorf("a gateway cannot reach a node's port %d (rule %s)", port, rule)
		}
		for _, src := range []string{otherNode, internetAddr} {
			if ok, rule := nsgAllows(t, rules, src, port); ok {
				t.Errorf("%s reaches a node's port %d (rule %s); only the gateways may", src, port, rule)
			}
		}
	}
}
