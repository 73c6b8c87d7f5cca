// The balancer's record of one pool member: its checks, load, drain and
// sessions, and what they make of it (up, gone, serving a protocol).

package balancer

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// node is the balancer's record of one pool member.
type node struct {
	Node
	weight   float64
	idx      int            // position in Balancer.order and Balancer.loads
	checks   [nProtos]check // the node's own check (SSH) and its services'
	draining bool
	removed  bool
	changed  time.Time      // last change of State
	idle     time.Time      // when the node last had no session (set while it has none)
	sessions PerProtocol    // live leases through this gateway
	users    map[string]int // user → live leases on this node
	// unverified counts the leases among sessions held for no proven
	// user (Hold): they count for ops and scale-in, never for the rules.
	unverified int
	load       Load      // last measured load; NoLoad until the first
	history    *loadRing // recent samples for ops; nil until the first
	// loadErr is why the node's last load scrape failed (see
	// loadErrorText), seen at loadErrAt; "" since a scrape succeeded.
	loadErr   string
	loadErrAt time.Time
}

// counted is the node's sessions as the routing rules count them: those
// of proven users (see Hold).
func (n *node) counted() int { return n.sessions.Total() - n.unverified }

// maxLoadError bounds the bytes of a scrape error kept on a node.
const maxLoadError = 512

// loadErrorText is a scrape error as ops see it: cut after at most
// maxLoadError bytes (on a character, marked by "…"), with every character that
// is not printable (a control, a tab, a bidi override) and every byte
// that is not UTF-8 written as a Go escape (\x1b, \u202e), so that an
// exporter's answer quoted in it can do nothing to a terminal or page.
func loadErrorText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var part string
		switch {
		case r == utf8.RuneError && size <= 1:
			part = fmt.Sprintf(`\x%02x`, s[i])
		case strconv.IsPrint(r):
			part = s[i : i+size]
		default:
			q := strconv.QuoteRuneToASCII(r)
			part = q[1 : len(q)-1]
		}
		if b.Len()+len(part) > maxLoadError {
			b.WriteString("…")
			break
		}
		b.WriteString(part)
		i += size
	}
	return b.String()
}

// upFor reports whether n takes new sessions of protocol index p: its own
// check and p's pass, and it has an address for p.
func (n *node) upFor(p int) bool {
	c, own := &n.checks[p], &n.checks[own]
	return own.up && !own.failed && c.up && !c.failed && n.serves(p)
}

// serves reports whether n has an address for protocol index p. Every
// node serves SSH: its check is the node's own.
func (n *node) serves(p int) bool { return p == own || protocols[p].addr(n.Node) != "" }

func (n *node) state() State {
	switch {
	case !n.checks[own].up:
		return StateDown
	case n.draining:
		return StateDraining
	default:
		return StateUp
	}
}

// DefaultRepinAfter is how long a node may fail its checks, with no
// session on it, before its users' pins move (Config.RepinAfter).
const DefaultRepinAfter = 2 * time.Minute

// check is the state of one of a node's checks: the node's own (its
// sshd, the SSH entry) or one protocol's service (its JupyterHub, its RDP
// server). A failing check stops new users; only a node that is gone
// loses its pins (rule 5).
type check struct {
	up, checked bool
	detail      string
	downSince   time.Time // when it last went down; zero while up
	// failed: since its last good probe, a dial or login to the node
	// failed, or a session on it failed while the check was down.
	failed bool
}

// gone reports whether pins to the node stop holding for this check at
// now: a dial, login or session failed, or the check has failed for
// repinAfter with no session of the node's relaying meanwhile (live
// sessions are proof that the node is alive). A node never checked is not
// gone: a gateway that just started keeps the pool's pins.
func (c *check) gone(now time.Time, repinAfter time.Duration, sessions int) bool {
	if c.failed {
		return true
	}
	return c.checked && !c.up && sessions == 0 && now.Sub(c.downSince) >= repinAfter
}
