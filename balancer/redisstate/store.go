package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
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

// Validate reports every bad setting (joined, one error each), naming its key. It never shows
// the URL's password.
func (c Config) Validate() error {
	var errs []error
	if !c.Enabled() {
		if c.PasswordFile != "" {
			errs = append(errs, errors.New("password_file: set without state.redis"))
		}
		return errors.Join(errs...)
	}
	if _, err := redis.ParseURL(c.Redis); err != nil {
		errs = append(errs, fmt.Errorf("redis: not a Redis URL (redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://...): %s", redactErr(err, c.Redis)))
	}
	if c.LeaseTTL < 3*time.Second {
		errs = append(errs, fmt.Errorf("lease_ttl: %s is too short; use 3s or more (leases are refreshed every third of it)", c.LeaseTTL))
	}
	if c.Replica != "" && !replicaRE.MatchString(c.Replica) {
		errs = append(errs, fmt.Errorf("replica: %q may hold only letters, digits, '.', '_' and '-' (1 to 64)", c.Replica))
	}
	if strings.ContainsAny(c.Prefix, " \n") {
		errs = append(errs, fmt.Errorf("prefix: %q may not contain spaces", c.Prefix))
	}
	return errors.Join(errs...)
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
	addr    string // host:port, for logs (never the password)
}

// New connects to the configured Redis (lazily: no call is made until the
// first use).
func New(cfg Config) (*Store, error) {
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
	return &Store{rdb: redis.NewClient(opts), prefix: cfg.Prefix, replica: replica, ttl: cfg.LeaseTTL, addr: opts.Addr}, nil
}

// Client is the Redis client, for other state kept beside the routing
// state (the identity provider's key bindings), under Prefix.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Prefix is the prefix of every key of this pool.
func (s *Store) Prefix() string { return s.prefix }

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

// LeaseTTL implements balancer.Shared.
func (s *Store) LeaseTTL() time.Duration { return s.ttl }

// Close closes the connections.
func (s *Store) Close() error { return s.rdb.Close() }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }
