package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/poolgate/poolgate/gateway/identity"

	"go.yaml.in/yaml/v3"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/load"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/httpgw"
	"github.com/poolgate/poolgate/gateway/rdpgw"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

// Config is the whole poolgate configuration file.
type Config struct {
	// StateDir holds the host key, the user CA key and the nodes' known
	// host keys, created 0600 on first start. Default /var/lib/poolgate.
	StateDir string `yaml:"state_dir"`
	// ShutdownTimeout is how long SIGTERM waits for open sessions before
	// closing them. Default 30s.
	ShutdownTimeout time.Duration          `yaml:"shutdown_timeout"`
	SSH             sshgw.Config           `yaml:"ssh"`
	HTTP            httpgw.Config          `yaml:"http"`
	Admin           admin.Config           `yaml:"admin"`
	Balancer        balancer.Config        `yaml:"balancer"`
	Health          discovery.HealthConfig `yaml:"health"`
	Discovery       discovery.Config       `yaml:"discovery"`
	// State shares routing state with other gateways (Redis); empty keeps
	// it in this gateway's memory.
	State redisstate.Config `yaml:"state"`
	// Load places users by the nodes' measured CPU, memory and GPU use.
	Load load.Config `yaml:"load"`
	// CA is where the SSH user CA key lives: state_dir, or Key Vault.
	CA CASection `yaml:"ca"`
	// RDP is the RDP gateway (Windows pools); off unless rdp.listen.
	RDP rdpgw.Config `yaml:"rdp"`
	// Identity signs users in with Entra ID or another OIDC provider.
	Identity identity.Config `yaml:"identity"`
}

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.StateDir == "" {
		c.StateDir = "/var/lib/poolgate"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	c.SSH = c.SSH.WithDefaults()
	c.HTTP = c.HTTP.WithDefaults()
	c.Admin = c.Admin.WithDefaults()
	c.Health = c.Health.WithDefaults()
	c.Discovery = c.Discovery.WithDefaults()
	c.State = c.State.WithDefaults()
	c.Load = c.Load.WithDefaults()
	c.RDP = c.RDP.WithDefaults()
	c.Identity = c.Identity.WithDefaults()
	c.Balancer.Load = balancerLoad(c.Load)
	c.Balancer.RepinAfter = c.Health.RepinAfter
	return c
}

// Validate reports the first bad setting as "key: problem".
func (c Config) Validate() error {
	if c.ShutdownTimeout < 0 {
		return fmt.Errorf("shutdown_timeout: must be positive, got %s", c.ShutdownTimeout)
	}
	for _, part := range []struct {
		key string
		v   interface{ Validate() error }
	}{
		{"ssh", c.SSH}, {"http", c.HTTP}, {"admin", c.Admin}, {"balancer", c.Balancer}, {"health", c.Health}, {"discovery", c.Discovery}, {"state", c.State}, {"load", c.Load}, {"ca", c.CA}, {"rdp", c.RDP}, {"identity", c.Identity},
	} {
		if err := part.v.Validate(); err != nil {
			return fmt.Errorf("%s.%w", part.key, err)
		}
	}
	return nil
}

// ConfigError is a problem in the config file, with where it is.
type ConfigError struct {
	File string
	Line int    // 0 when the problem is not at one line
	Key  string // dotted key, e.g. ssh.listen; may be empty
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadConfig reads, checks and defaults the config file. Every error names
// the file, and where it can the line and the key.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig on the file's contents; name is used in errors.
func ParseConfig(name string, data []byte) (Config, error) {
	var cfg Config
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) { // io.EOF: empty file
		return cfg, &ConfigError{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		if err := checkNode(root, reflect.TypeOf(cfg), ""); err != nil {
			err.File = name
			return cfg, err
		}
		if err := root.Decode(&cfg); err != nil {
			return cfg, &ConfigError{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return cfg, &ConfigError{File: name, Line: extra.Line, Msg: "more than one YAML document; put everything in one"}
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		key, msg, _ := strings.Cut(err.Error(), ": ")
		return cfg, &ConfigError{File: name, Key: key, Msg: msg}
	}
	return cfg, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkNode walks the YAML tree against the Go type it will be decoded
// into, so that unknown keys and badly typed values are reported with the
// line and the dotted key rather than a decoder's type name.
func checkNode(n *yaml.Node, t reflect.Type, key string) *ConfigError {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bad := func(format string, args ...any) *ConfigError {
		return &ConfigError{Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return bad("want a duration such as 2s or 30m")
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			return bad("%q is not a duration (use a number with a unit: 500ms, 2s, 30m, 1h)", n.Value)
		}
		return nil
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("want a mapping of keys, got %s", describe(n))
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := k.Value
			if key != "" {
				sub = key + "." + k.Value
			}
			f, ok := fields[k.Value]
			if !ok {
				known := make([]string, 0, len(fields))
				for name := range fields {
					known = append(known, name)
				}
				sort.Strings(known)
				return &ConfigError{Line: k.Line, Key: sub, Msg: fmt.Sprintf("unknown key (known here: %s)", strings.Join(known, ", "))}
			}
			if err := checkNode(v, f.Type, sub); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return bad("want a mapping, got %s", describe(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkNode(n.Content[i+1], t.Elem(), key+"."+n.Content[i].Value); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("want a list, got %s", describe(n))
		}
		for i, item := range n.Content {
			if err := checkNode(item, t.Elem(), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return bad("want a single value, got %s", describe(n))
	}
	switch t.Kind() {
	case reflect.Bool:
		if n.Tag != "!!bool" {
			return bad("want true or false, got %q", n.Value)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if _, err := strconv.ParseInt(n.Value, 10, 64); err != nil {
			return bad("want a whole number, got %q", n.Value)
		}
	case reflect.Float64, reflect.Float32:
		if _, err := strconv.ParseFloat(n.Value, 64); err != nil {
			return bad("want a number, got %q", n.Value)
		}
	}
	return nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}
