package balancer

import (
	"time"

	"go.uber.org/zap"
)

// SetHealth records a result of the node's check for proto: SSH is the
// node's own (a node down for it takes no new session of any protocol),
// HTTP and RDP its services'. A report of up means a probe passed: it
// clears a failure the front ends reported (NodeFailed), so the checker
// reports nothing for a failing probe that does not yet take the node
// down. Unknown names are ignored (the node may
// have just left the pool). A failing check stops new users at once, but
// moves no pin: a user's node is left only when it is gone (see
// Config.RepinAfter and NodeFailed).
func (b *Balancer) SetHealth(name string, proto Protocol, up bool, detail string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return
	}
	c := &n.checks[proto.index()]
	c.detail = detail
	if up {
		c.failed = false
	}
	if c.checked && c.up == up {
		return
	}
	c.checked, c.up = true, up
	if up {
		c.downSince = time.Time{}
	} else {
		c.downSince = b.now()
	}
	n.changed = b.now()
	b.refreshLocked(n)
}

// NodeFailed records that a front end could not dial or log in to the
// node for proto: the node is gone for it (its users' next sessions of
// proto go elsewhere, and they are told) until its check next passes.
func (b *Balancer) NodeFailed(name string, proto Protocol) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n, ok := b.nodes[name]; ok && !n.checks[proto.index()].failed {
		n.checks[proto.index()].failed = true
		b.log.Info("node unreachable; its users move on their next session", zap.String("node", name), zap.String("protocol", string(proto)))
		b.refreshLocked(n)
	}
}

// aliveFor reports whether pins to n hold for protocol index p at now
// (rule 5): it is in the pool, serves p, and neither its own check nor
// p's says it is gone. sessions are the node's live sessions as the
// caller knows them (the whole pool's, with shared state).
func (b *Balancer) aliveFor(n *node, p int, now time.Time, sessions PerProtocol) bool {
	return !n.removed && n.serves(p) && b.checksAlive(&n.checks, p, now, sessions)
}

// checkedAlive is checksAlive for a node whose checks have reported: the
// last resort of placement (see decide) takes only nodes that answered a
// probe once, so a node that joined a moment ago waits for its first.
func (b *Balancer) checkedAlive(checks *[nProtos]check, p int, now time.Time, sessions PerProtocol) bool {
	return checks[own].checked && checks[p].checked && b.checksAlive(checks, p, now, sessions)
}

// checksAlive reports whether neither the node's own check nor protocol
// index p's says it is gone at now, with the given live sessions.
func (b *Balancer) checksAlive(checks *[nProtos]check, p int, now time.Time, sessions PerProtocol) bool {
	ra := b.conf().RepinAfter
	return !checks[own].gone(now, ra, sessions.Total()) && !checks[p].gone(now, ra, sessions[p])
}
