package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/poolgate/poolgate/balancer"
)

// Config is the YAML section "state".
type Config struct {
	// Redis is the shared state's URL: redis://[:PASSWORD@]HOST:PORT[/DB],
	// or rediss:// for TLS (Azure Cache for Redis: rediss://:KEY@NAME.redis.cache.windows.net:6380).
	// Empty: the state stays in this gateway's memory.
	Redis string `yaml:"redis"`
	// PasswordFile is a file holding the Redis password (its first line),
	// so that poolgate.yaml holds no secret; it takes the place of a
	// password in the URL. The file may not be readable by others.
	PasswordFile string `yaml:"password_file"`
	// LeaseTTL is how long a session outlives its gateway in the counts
	// when the gateway dies without releasing it. Leases are refreshed
	// every third of it. Default 30s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Replica names this gateway among those sharing the state. Default:
	// the host name and a random suffix, new at each start.
	Replica string `yaml:"replica"`
	// Prefix of every key. Default "{poolgate}:" (the braces keep all keys
	// in one slot of a Redis cluster).
	Prefix string `yaml:"prefix"`
}

// Enabled reports whether state is shared.
func (c Config) Enabled() bool { return c.Redis != "" }

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if !c.Enabled() {
		return c
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.Prefix == "" {
		c.Prefix = "{poolgate}:"
	}
	return c
}

var replicaRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Validate reports the first bad setting, naming its key. It never shows
// the URL's password.
func (c Config) Validate() error {
	if !c.Enabled() {
		if c.PasswordFile != "" {
			return errors.New("password_file: set without state.redis")
		}
		return nil
	}
	if _, err := redis.ParseURL(c.Redis); err != nil {
		return fmt.Errorf("redis: not a Redis URL (redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://...): %s", redactErr(err, c.Redis))
	}
	switch {
	case c.LeaseTTL < 3*time.Second:
		return fmt.Errorf("lease_ttl: %s is too short; use 3s or more (leases are refreshed every third of it)", c.LeaseTTL)
	case c.Replica != "" && !replicaRE.MatchString(c.Replica):
		return fmt.Errorf("replica: %q may hold only letters, digits, '.', '_' and '-' (1 to 64)", c.Replica)
	case strings.ContainsAny(c.Prefix, " \n"):
		return fmt.Errorf("prefix: %q may not contain spaces", c.Prefix)
	}
	return nil
}

// redactErr keeps a URL's password out of an error message, even for a
// URL too malformed to parse.
func redactErr(err error, raw string) string {
	msg := err.Error()
	if _, rest, ok := strings.Cut(raw, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" {
				msg = strings.ReplaceAll(msg, pw, "REDACTED")
			}
		}
	}
	return msg
}

// Store is the shared state in Redis. Create it with New.
type Store struct {
	rdb     *redis.Client
	prefix  string
	replica string
	ttl     time.Duration
	grace   time.Duration // the balancer's affinity grace
	addr    string        // host:port, for logs (never the password)
}

// New connects to the configured Redis (lazily: no call is made until the
// first use). grace is the balancer's affinity grace (zero: the default).
func New(cfg Config, grace time.Duration) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := redis.ParseURL(cfg.Redis)
	if err != nil {
		return nil, err
	}
	if cfg.PasswordFile != "" {
		if opts.Password, err = readPassword(cfg.PasswordFile); err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
	}
	// Short timeouts and no retries: a login must never wait long on
	// Redis; the balancer decides alone instead.
	opts.DialTimeout = 500 * time.Millisecond
	opts.ReadTimeout = 500 * time.Millisecond
	opts.WriteTimeout = 500 * time.Millisecond
	opts.MaxRetries = -1
	opts.PoolSize = 32
	opts.MinIdleConns = 2
	replica := cfg.Replica
	if replica == "" {
		replica = defaultReplica()
	}
	if grace <= 0 {
		grace = balancer.DefaultAffinityGrace
	}
	return &Store{rdb: redis.NewClient(opts), prefix: cfg.Prefix, replica: replica, ttl: cfg.LeaseTTL, grace: grace, addr: opts.Addr}, nil
}

// readPassword reads the first line of a password file that others
// cannot read.
func readPassword(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("%s has mode %04o: others may read it; run chmod 600 %s (or 640 with the gateway's group)", path, st.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	pw, _, _ := strings.Cut(string(data), "\n")
	pw = strings.TrimRight(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return pw, nil
}

func defaultReplica() string {
	host, err := os.Hostname()
	if err != nil || !replicaRE.MatchString(host) {
		host = "poolgate"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := host + "-" + hex.EncodeToString(b[:])
	if len(name) > 64 {
		name = name[len(name)-64:]
	}
	return name
}

// Addr is the Redis address (host:port), for logs.
func (s *Store) Addr() string { return s.addr }

// Replica implements balancer.Shared.
func (s *Store) Replica() string { return s.replica }

// HeartbeatInterval is how often the balancer should refresh leases.
func (s *Store) HeartbeatInterval() time.Duration { return s.ttl / 3 }

// Close closes the connections.
func (s *Store) Close() error { return s.rdb.Close() }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

func (s *Store) leaseKey(id uint64) string { return s.replica + "/" + strconv.FormatUint(id, 10) }

func ms(t time.Time) int64                 { return t.UnixMilli() }
func msd(d time.Duration) int64            { return d.Milliseconds() }
func (s *Store) keys() []string            { return []string{s.prefix + "drain"} } // routes the script to the prefix's slot
func protoName(p balancer.Protocol) string { return string(p) }

// Claim implements balancer.Shared.
func (s *Store) Claim(ctx context.Context, c balancer.Claim) (balancer.Claimed, error) {
	nodes := make([][5]any, len(c.Nodes))
	for i, n := range c.Nodes {
		nodes[i] = [5]any{n.Name, n.Weight, b01(n.Up), b01(n.Avoid), n.Load}
	}
	js, err := json.Marshal(nodes)
	if err != nil {
		return balancer.Claimed{}, err
	}
	res, err := claimScript.Run(ctx, s.rdb, s.keys(), s.prefix, c.User, protoName(c.Proto), c.Client, s.leaseKey(c.LeaseID), s.replica,
		ms(c.Now), msd(c.Grace), msd(s.ttl), c.MaxSessionsPerNode, strconv.FormatFloat(c.Rand, 'f', -1, 64), string(js),
		strconv.FormatFloat(c.SessionCost, 'g', -1, 64), c.Node, string(c.By)).Slice()
	if err != nil {
		return balancer.Claimed{}, fmt.Errorf("redis claim: %w", err)
	}
	if len(res) != 5 {
		return balancer.Claimed{}, fmt.Errorf("redis claim: unexpected answer %v", res)
	}
	node, _ := res[0].(string)
	lost, _ := res[1].(string)
	created, _ := res[2].(int64)
	refused, _ := res[3].(string)
	by, _ := res[4].(string)
	return balancer.Claimed{Node: node, Lost: lost, Created: created == 1, Refused: refused, By: balancer.PinOrigin(by)}, nil
}

// PinOf implements balancer.Shared.
func (s *Store) PinOf(ctx context.Context, user string, now time.Time) (string, error) {
	node, err := pinScript.Run(ctx, s.rdb, s.keys(), s.prefix, user, ms(now)).Text()
	if err != nil {
		return "", fmt.Errorf("redis pin: %w", err)
	}
	return node, nil
}

func b01(v bool) int {
	if v {
		return 1
	}
	return 0
}

// Release implements balancer.Shared.
func (s *Store) Release(ctx context.Context, r balancer.SharedRelease) error {
	now := time.Now()
	err := releaseScript.Run(ctx, s.rdb, s.keys(), s.prefix, s.leaseKey(r.LeaseID), r.User, r.Node, s.replica,
		ms(now), msd(s.grace), b01(r.Abort), r.Lost).Err()
	if err != nil {
		return fmt.Errorf("redis release: %w", err)
	}
	return nil
}

// Heartbeat implements balancer.Shared.
func (s *Store) Heartbeat(ctx context.Context, b balancer.Beat) error {
	rows := make([][6]any, len(b.Leases))
	for i, l := range b.Leases {
		rows[i] = [6]any{s.leaseKey(l.ID), l.User, l.Node, protoName(l.Proto), l.Client, ms(l.Started)}
	}
	keep := make([]string, len(b.Pending))
	for i, id := range b.Pending {
		keep[i] = s.leaseKey(id)
	}
	js, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	kjs, err := json.Marshal(keep)
	if err != nil {
		return err
	}
	if err := heartbeatScript.Run(ctx, s.rdb, s.keys(), s.prefix, s.replica, ms(time.Now()), msd(s.ttl), msd(s.grace), string(js), string(kjs), b.UpTo).Err(); err != nil {
		return fmt.Errorf("redis heartbeat: %w", err)
	}
	return nil
}

// Record implements balancer.Shared: one lease put in (or refreshed), its
// user's pin kept, nothing forgotten.
func (s *Store) Record(ctx context.Context, l balancer.LeaseRecord) error {
	return s.Heartbeat(ctx, balancer.Beat{Leases: []balancer.LeaseRecord{l}})
}

// watchPing is how long Watch waits on a quiet subscription before it
// pings; a ping unanswered for as long again ends the subscription, and
// Watch subscribes anew.
const watchPing = 15 * time.Second

// Watch implements balancer.Shared: it calls n.ForgetPin with each user
// whose pin another gateway created or moved, until ctx ends. It calls
// n.SetPinNotices(true) each time its subscription is confirmed and
// n.SetPinNotices(false) when it is lost, since notices are missed while
// it is; it subscribes again after a break, waiting up to 5 s between
// tries. Balancer.RunShared runs it.
func (s *Store) Watch(ctx context.Context, n balancer.PinNotices) {
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		start := time.Now()
		s.watchOnce(ctx, n)
		n.SetPinNotices(false)
		if time.Since(start) > time.Minute {
			wait = 0
		}
		wait = min(max(2*wait, 100*time.Millisecond), 5*time.Second)
	}
}

// watchOnce holds one subscription until it breaks or ctx ends.
func (s *Store) watchOnce(ctx context.Context, n balancer.PinNotices) {
	sub := s.rdb.Subscribe(ctx, s.prefix+"pins")
	defer sub.Close()
	// Closing the subscription ends a Receive that waits.
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() })
	defer stop()
	pinged := false
	for {
		msg, err := sub.ReceiveTimeout(ctx, watchPing)
		var nerr net.Error
		switch {
		case err == nil:
		case errors.As(err, &nerr) && nerr.Timeout() && !pinged:
			pinged = true
			if sub.Ping(ctx) != nil {
				return
			}
			continue
		default:
			return
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				n.SetPinNotices(true)
			}
		case *redis.Message:
			replica, user, found := strings.Cut(m.Payload, " ")
			if found && replica != s.replica {
				n.ForgetPin(user)
			}
		}
	}
}

// Drain implements balancer.Shared.
func (s *Store) Drain(ctx context.Context, node string, on bool) error {
	pipe := s.rdb.TxPipeline()
	if on {
		pipe.SAdd(ctx, s.prefix+"drain", node)
	} else {
		pipe.SRem(ctx, s.prefix+"drain", node)
	}
	pipe.SAdd(ctx, s.prefix+"nodes", node)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis drain: %w", err)
	}
	return nil
}

// View implements balancer.Shared.
func (s *Store) View(ctx context.Context) (balancer.View, error) {
	raw, err := viewScript.Run(ctx, s.rdb, s.keys(), s.prefix, ms(time.Now())).Text()
	if err != nil {
		return balancer.View{}, fmt.Errorf("redis view: %w", err)
	}
	return decodeView(raw)
}

// decodeView reads the view script's JSON. cjson writes an empty list as
// {}, so lists are read leniently.
func decodeView(raw string) (balancer.View, error) {
	var doc struct {
		Nodes    json.RawMessage `json:"nodes"`
		Sessions json.RawMessage `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return balancer.View{}, fmt.Errorf("redis view: %w", err)
	}
	v := balancer.View{Nodes: map[string]balancer.NodeView{}}
	var nodes map[string][]json.RawMessage
	if len(doc.Nodes) > 0 && string(doc.Nodes) != "[]" {
		if err := json.Unmarshal(doc.Nodes, &nodes); err != nil {
			return v, fmt.Errorf("redis view nodes: %w", err)
		}
	}
	for name, f := range nodes {
		if len(f) != 6 && len(f) != 7 { // 6: a gateway from before RDP
			return v, errors.New("redis view: malformed node entry")
		}
		var nv balancer.NodeView
		var idle int64
		_ = json.Unmarshal(f[0], &nv.Sessions[0])
		_ = json.Unmarshal(f[1], &nv.Sessions[1])
		nv.Users = lenientList(f[2])
		_ = json.Unmarshal(f[3], &nv.Pinned)
		_ = json.Unmarshal(f[4], &nv.Draining)
		_ = json.Unmarshal(f[5], &idle)
		if len(f) == 7 {
			_ = json.Unmarshal(f[6], &nv.Sessions[2])
		}
		if idle > 0 && nv.Sessions[0]+nv.Sessions[1]+nv.Sessions[2] == 0 {
			nv.IdleSince = time.UnixMilli(idle)
		}
		v.Nodes[name] = nv
	}
	var rows [][]json.RawMessage
	if len(doc.Sessions) > 0 && doc.Sessions[0] == '[' {
		if err := json.Unmarshal(doc.Sessions, &rows); err != nil {
			return v, fmt.Errorf("redis view sessions: %w", err)
		}
	}
	for _, r := range rows {
		if len(r) != 7 {
			continue
		}
		var lk, user, node, proto, client, replica string
		var started int64
		_ = json.Unmarshal(r[0], &lk)
		_ = json.Unmarshal(r[1], &user)
		_ = json.Unmarshal(r[2], &node)
		_ = json.Unmarshal(r[3], &proto)
		_ = json.Unmarshal(r[4], &client)
		_ = json.Unmarshal(r[5], &started)
		_ = json.Unmarshal(r[6], &replica)
		_, idStr, _ := strings.Cut(lk, "/")
		id, _ := strconv.ParseUint(idStr, 10, 64)
		v.Sessions = append(v.Sessions, balancer.SessionInfo{
			ID: id, User: user, Node: node, Protocol: balancer.Protocol(proto), Client: client,
			Started: time.UnixMilli(started), Replica: replica,
		})
	}
	return v, nil
}

func lenientList(raw json.RawMessage) []string {
	var out []string
	if len(raw) > 0 && raw[0] == '[' {
		_ = json.Unmarshal(raw, &out)
	}
	return out
}
