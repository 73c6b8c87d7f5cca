package sshgw

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/username"
)

// Messages of a refused node choice.
const (
	msgChoiceOff     = "poolgate: choosing a node (%s%sNODE) is turned off on this pool; log in as %s.\n"
	msgBadNodeName   = "poolgate: %q is not a node name; log in as %s%sNODE with the name of a node.\n"
	msgChoiceRefused = "poolgate: you cannot choose node %s now: %s. Nodes you can choose: %s.\n"
)

var (
	errChoice = errors.New("node choice refused")
	// errChoiceUnproven refuses a password for a node the user cannot
	// choose; the client sees what a wrong password gets.
	errChoiceUnproven = fmt.Errorf("%w: the password was not checked: %w", errChoice, errNodeRefused)
)

// who returns the login's user name, with any chosen node split off
// (alice+node-3: alice, who chose node-3) and kept in c.chosen for the
// login, in canonical form (Alice+node-3: alice). The canonical name
// alone is what authorized_keys, the certificate, the node login, the
// password passthrough and every count use. A name that is not valid is
// returned as sent, for checkUser to refuse.
func (c *clientConn) who(meta ssh.ConnMetadata) string {
	user := meta.User()
	c.chosen = ""
	if sep := c.cfg.separator(); sep != "" {
		if u, node, found := strings.Cut(user, sep); found {
			user, c.chosen = u, node
			if c.chosen == "" {
				c.chosen = sep // "alice+": a choice of nothing, refused as a bad name
			}
		}
	}
	if canon, err := username.Canonical(user); err == nil {
		return canon
	}
	return user
}

// validNodeName reports whether name could be a node's: 1 to 64 letters,
// digits, '.', '_' and '-', not starting with '.' or '-'.
func validNodeName(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '.' || name[0] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}

// checkChoice refuses a choice that cannot be made, before any node is
// contacted: the feature is off, or the name is no node's name.
func (c *clientConn) checkChoice(user string) error {
	sep := c.cfg.separator()
	if c.cfg.NodeChoice != nil && !*c.cfg.NodeChoice {
		return &ssh.BannerError{Err: errChoice, Message: fmt.Sprintf(msgChoiceOff, safeUser(user), sep, safeUser(user))}
	}
	if !validNodeName(c.chosen) {
		return &ssh.BannerError{Err: errChoice, Message: fmt.Sprintf(msgBadNodeName, c.chosen, safeUser(user), sep)}
	}
	return nil
}

// choiceRefused is the message for a proven user whose chosen node cannot
// take the session, naming the nodes they can choose.
func (c *clientConn) choiceRefused(user string, err error) error {
	reason := "it is not in the pool"
	switch {
	case errors.Is(err, balancer.ErrNodeDown):
		reason = "it is down"
	case errors.Is(err, balancer.ErrDraining):
		reason = "it is being drained and takes no new users"
	case errors.Is(err, balancer.ErrNodeFull):
		reason = "it is full"
	}
	var names []string
	for _, n := range c.s.bal.Choosable(user, balancer.SSH) {
		names = append(names, n.Name)
	}
	list := strings.Join(names, ", ")
	if list == "" {
		list = "none right now"
	}
	c.log.Info("ssh login refused: node choice", zap.String("user", user), zap.String("node", c.chosen), zap.Error(err))
	return &ssh.BannerError{Err: fmt.Errorf("%w: %v", errChoice, err), Message: fmt.Sprintf(msgChoiceRefused, c.chosen, reason, list)}
}

// choiceUnproven refuses a user not yet proven (a password, not yet
// checked) who named a node they cannot choose now: unknown, down,
// draining or full, and not their pin. Before authentication a named node
// must tell nothing (issue 25): not whether it exists, nor whether this
// user is pinned to it. So the answer is the one a wrong password gets
// from a node, no banner and a plain failure after about the time a node
// takes to say no, and no node is contacted; the reasons come only to a
// proven user (choiceRefused). sshd does the same for a user it will not
// let in (DenyUsers, an invalid user): it asks for the password and fails
// it like a wrong one.
func (c *clientConn) choiceUnproven(user string) error {
	c.log.Debug("password for a node the user cannot choose: refused as a wrong one", zap.String("user", safeUser(user)), zap.String("node", c.chosen))
	if d := min(c.s.refusals.typical(), c.cfg.UpstreamTimeout); d > 0 {
		time.Sleep(d)
	}
	return errChoiceUnproven
}

// refusalTime is a moving average of how long a password login that a
// node refused took, from placement to the node's answer.
type refusalTime struct{ ns atomic.Int64 }

// observe adds one refusal's duration to the average (weight 1/8).
func (r *refusalTime) observe(d time.Duration) {
	for {
		old := r.ns.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)/8
		}
		if r.ns.CompareAndSwap(old, next) {
			return
		}
	}
}

// typical is the average, 0 before any refusal.
func (r *refusalTime) typical() time.Duration { return time.Duration(r.ns.Load()) }
