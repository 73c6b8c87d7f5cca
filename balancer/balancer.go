package balancer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Config holds the balancer's settings (YAML section "balancer").
type Config struct {
	// AffinityGrace is how long a user stays pinned to a node after their
	// last session there closes. Default 30m.
	AffinityGrace time.Duration `yaml:"affinity_grace"`
	// MaxSessionsPerNode caps the sessions a node takes from new users;
	// users already pinned to it may still open sessions there, so a user
	// is never split across nodes. 0 means no limit.
	MaxSessionsPerNode int `yaml:"max_sessions_per_node"`
	// Placement is how new users are spread over the nodes that can take
	// them: "spread" (the default) puts each on the least-loaded node;
	// "pack" fills the busiest node whose score is still under
	// Load.PackTarget before starting an emptier one, so that empty
	// nodes appear and scale-in can remove them.
	Placement string `yaml:"placement"`
	// RepinAfter is how long a node may fail its checks, with no session
	// of it relaying, before its users' pins move (YAML
	// health.repin_after, checked and filled by the caller). Default 2m;
	// a dial, login or session that fails moves them at once.
	RepinAfter time.Duration `yaml:"-"`
	// Load places users by the nodes' measured load (section "load",
	// checked and filled by the caller). Its zero SessionCost means the
	// default.
	Load LoadConfig `yaml:"-"`
}

// Placements (Config.Placement).
const (
	Spread = "spread"
	Pack   = "pack"
)

// DefaultAffinityGrace is the grace period used when Config leaves it zero.
const DefaultAffinityGrace = 30 * time.Minute

// Validate reports every bad setting (joined, one error each), naming its key.
func (c Config) Validate() error {
	var errs []error
	if c.AffinityGrace < 0 {
		errs = append(errs, fmt.Errorf("affinity_grace: must not be negative, got %s", c.AffinityGrace))
	}
	if c.MaxSessionsPerNode < 0 {
		errs = append(errs, fmt.Errorf("max_sessions_per_node: must be 0 (no limit) or more, got %d", c.MaxSessionsPerNode))
	}
	switch c.Placement {
	case "", Spread, Pack:
	default:
		errs = append(errs, fmt.Errorf("placement: %q is neither %q nor %q", c.Placement, Spread, Pack))
	}
	return errors.Join(errs...)
}

// Options carries the balancer's collaborators. The zero value is usable.
type Options struct {
	Logger *zap.Logger      // nil means no logging
	Now    func() time.Time // nil means time.Now
	// Rand returns a uniform integer in [0, n); it must be safe for
	// concurrent use. Nil means math/rand/v2.IntN.
	Rand func(n int) int
	// Shared, if set, is routing state shared with other gateways; run
	// RunShared beside the balancer. Nil means this gateway is alone.
	Shared Shared
}

// Balancer decides where sessions go and keeps count of them. It is safe
// for concurrent use. Create it with New.
type Balancer struct {
	cfg  atomic.Pointer[Config] // replaced whole by SetConfig; read with conf
	log  *zap.Logger
	now  func() time.Time
	rand func(n int) int

	// mu protects every field below and the mutable fields of each node,
	// userState and Lease.
	mu    sync.RWMutex
	nodes map[string]*node
	order []*node // nodes in the order discovery listed them
	// loads[p][i] is order[i]'s placement score for a new session of
	// protocol index p (see openScore), +Inf if it takes no new user of
	// that protocol.
	loads [nProtos][]float64
	// users is the pin table: every user with a pin or a session (with
	// shared state, the whole pool's pins as last heard).
	users     map[string]*userState
	leases    map[uint64]*Lease
	nextID    uint64
	lastSweep time.Time

	started, ended [nProtos]atomic.Uint64 // leases taken and ended, by protocol index

	// sh is the shared-state mode (Options.Shared); nil when this gateway
	// is alone. Lock order: Balancer.mu is never held while sh.view's lock
	// is taken, nor the other way round (see viewCache).
	sh *sharedMode
}

// userState is one user's entry in the pin table.
type userState struct {
	name string
	pin  Pin
	live int // live leases through this gateway, on any node
	// ver is the pin's version in the shared state (0: never heard).
	ver uint64
	// elsewhere names the nodes other than pin.Node where the user still
	// had sessions when the shared state last reconciled (ops' view).
	elsewhere []string
}

// withDefaults fills the zero fields the balancer gives defaults.
func (cfg Config) withDefaults() Config {
	if cfg.AffinityGrace == 0 {
		cfg.AffinityGrace = DefaultAffinityGrace
	}
	if cfg.RepinAfter == 0 {
		cfg.RepinAfter = DefaultRepinAfter
	}
	if cfg.Load.SessionCost == 0 {
		cfg.Load.SessionCost = DefaultSessionCost
	}
	return cfg
}

// conf is the settings in force.
func (b *Balancer) conf() *Config { return b.cfg.Load() }

// New returns a balancer with an empty node set.
func New(cfg Config, opts Options) *Balancer {
	cfg = cfg.withDefaults()
	b := &Balancer{
		log:    opts.Logger,
		now:    opts.Now,
		rand:   opts.Rand,
		nodes:  make(map[string]*node),
		users:  make(map[string]*userState),
		leases: make(map[uint64]*Lease),
	}
	b.cfg.Store(&cfg)
	if b.log == nil {
		b.log = zap.NewNop()
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.rand == nil {
		b.rand = rand.IntN
	}
	b.lastSweep = b.now()
	if opts.Shared != nil {
		b.sh = newSharedMode(opts.Shared)
	}
	return b
}

// Lease is one live session on a node. Front ends take it with Acquire
// before relaying and Release it when the session ends; until then the
// session counts toward the node's load and keeps the user pinned there.
type Lease struct {
	b        *Balancer
	id       uint64
	user     string
	node     *node
	proto    Protocol
	client   string
	started  time.Time
	repinned string // node the user lost before this lease, if any
	created  bool   // this lease created the user's pin
	done     bool   // released; protected by b.mu
}

// sharedMode is what a balancer sharing its state (Options.Shared) keeps
// beside its own view. Its fields are under three regimes: pending,
// notices and alone are protected by Balancer.mu; view has its own lock
// (see viewCache); ops and degraded are safe on their own.
type sharedMode struct {
	store    Shared
	ops      chan func(context.Context) error // releases and records, to RunShared
	degraded atomic.Bool                      // the shared state did not answer

	pending map[uint64]bool // lease IDs of claims under way
	// notices: pin notices are known to arrive and the whole table was
	// read since the subscription began, so this gateway's copy of the
	// pin table is current and a pinned user is served from it.
	notices bool
	// subscribed counts confirmed subscriptions (odd while one holds, as
	// SetPinNotices sees them); a table read marks notices only if it
	// began within the subscription that still holds.
	subscribed uint64
	resync     chan struct{} // a subscription began: read the whole table
	// alone: users this gateway placed while the shared state was
	// unreachable, each logged once.
	alone map[string]bool
	view  viewCache
}

func newSharedMode(s Shared) *sharedMode {
	return &sharedMode{
		store:   s,
		ops:     make(chan func(context.Context) error, 4096),
		pending: map[uint64]bool{},
		alone:   map[string]bool{},
		resync:  make(chan struct{}, 1),
	}
}
