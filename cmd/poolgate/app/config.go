package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/poolgate/poolgate/gateway/identity"
	"github.com/poolgate/poolgate/gateway/recording"

	"go.yaml.in/yaml/v3"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/capacity"
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
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// UpgradeTimeout is how long a gateway that handed its listeners to a
	// new binary (SIGUSR2) keeps relaying its open sessions before it ends
	// them as SIGTERM does. Default 24h.
	UpgradeTimeout time.Duration          `yaml:"upgrade_timeout"`
	SSH            sshgw.Config           `yaml:"ssh"`
	HTTP           httpgw.Config          `yaml:"http"`
	Admin          admin.Config           `yaml:"admin"`
	Balancer       balancer.Config        `yaml:"balancer"`
	Health         discovery.HealthConfig `yaml:"health"`
	Discovery      discovery.Config       `yaml:"discovery"`
	// State shares routing state with other gateways (Redis); empty keeps
	// it in this gateway's memory.
	State redisstate.Config `yaml:"state"`
	// Load places users by the nodes' measured CPU, memory and GPU use.
	Load load.Config `yaml:"load"`
	// CA is where the SSH user CA key lives: state_dir, or Key Vault.
	CA CASection `yaml:"ca"`
	// RDP is Remote Desktop (Windows pools): the RD Gateway on the HTTP
	// port (rdp.gateway.enabled) and plain RDP (rdp.listen); both off by
	// default.
	RDP rdpgw.Config `yaml:"rdp"`
	// Identity signs users in with Entra ID or another OIDC provider.
	Identity identity.Config `yaml:"identity"`
	// Capacity grows and shrinks the Azure scale set with the team: warm
	// spares, a node more when all are saturated, idle nodes removed.
	// Off by default.
	Capacity capacity.Config `yaml:"capacity"`
	// Recording records SSH sessions for audit. Off by default.
	Recording recording.Config `yaml:"recording"`
}

// DefaultUpgradeTimeout is upgrade_timeout's default: a day, as a
// terminal left open overnight should outlive an upgrade.
const DefaultUpgradeTimeout = 24 * time.Hour

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.StateDir == "" {
		c.StateDir = "/var/lib/poolgate"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.UpgradeTimeout == 0 {
		c.UpgradeTimeout = DefaultUpgradeTimeout
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
	c.Capacity = c.Capacity.WithDefaults()
	c.Recording = c.Recording.WithDefaults(c.StateDir)
	c.Balancer.Load = balancerLoad(c.Load)
	c.Balancer.RepinAfter = c.Health.RepinAfter
	return c
}

// Validate reports every bad setting, each as "key: problem" (joined).
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, fmt.Errorf("%s: %s", p.Key, p.Msg))
	}
	return errors.Join(errs...)
}

// problems is every bad setting, with its dotted key and without a line.
func (c Config) problems() []*ConfigError {
	var out []*ConfigError
	if c.ShutdownTimeout < 0 {
		out = append(out, &ConfigError{Key: "shutdown_timeout", Msg: fmt.Sprintf("must be positive, got %s", c.ShutdownTimeout)})
	}
	if c.Capacity.Enabled() && c.Discovery.Azure == nil {
		out = append(out, &ConfigError{Key: "capacity", Msg: "grows and shrinks an Azure scale set: it needs discovery.azure"})
	}
	if c.RDP.Gateway.Enabled && !c.HTTP.Enabled() {
		out = append(out, &ConfigError{Key: "rdp.gateway.enabled", Msg: "the RD Gateway runs on the HTTP front end's port: set http.listen too"})
	}
	if c.UpgradeTimeout < 0 {
		out = append(out, &ConfigError{Key: "upgrade_timeout", Msg: fmt.Sprintf("must be positive, got %s", c.UpgradeTimeout)})
	}
	for _, part := range []struct {
		key string
		v   interface{ Validate() error }
	}{
		{"ssh", c.SSH}, {"http", c.HTTP}, {"admin", c.Admin}, {"balancer", c.Balancer}, {"health", c.Health}, {"discovery", c.Discovery}, {"state", c.State}, {"load", c.Load}, {"ca", c.CA}, {"rdp", c.RDP}, {"rdp.gateway", c.RDP.Gateway}, {"identity", c.Identity}, {"capacity", c.Capacity}, {"recording", c.Recording},
	} {
		err := part.v.Validate()
		if err == nil {
			continue
		}
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			key, msg, ok := strings.Cut(e.Error(), ": ")
			if !ok {
				key, msg = "", e.Error()
			}
			out = append(out, &ConfigError{Key: joinKey(part.key, key), Msg: msg})
		}
	}
	return out
}

func joinKey(section, key string) string {
	if key == "" {
		return section
	}
	return section + "." + key
}

// warnings is what is allowed but likely a mistake: the gateway runs, and
// check and serve say so.
func (c Config) warnings() []*ConfigError {
	var out []*ConfigError
	if c.HTTP.Enabled() && c.Discovery.Azure == nil && len(c.Discovery.Static) > 0 {
		withHTTP := 0
		for _, n := range c.Discovery.Static {
			if n.HTTP != "" {
				withHTTP++
			}
		}
		if withHTTP == 0 {
			out = append(out, &ConfigError{Key: "http.listen", Msg: "set, but no node in discovery.static has an http address: browsers would get 503 (give the nodes http: HOST:PORT, or remove http.listen)"})
		}
	}
	return out
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

// ConfigErrors is every problem found in one config file, in the file's
// order: one per line of Error.
type ConfigErrors []*ConfigError

func (e ConfigErrors) Error() string {
	lines := make([]string, len(e))
	for i, ce := range e {
		lines[i] = ce.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *ConfigError.
func (e ConfigErrors) Unwrap() []error {
	out := make([]error, len(e))
	for i, ce := range e {
		out[i] = ce
	}
	return out
}

// LoadConfig reads, checks and defaults the config file. Every error names
// the file, and where it can the line and the key; all of the file's
// errors come at once (a ConfigErrors).
func LoadConfig(path string) (Config, error) {
	cfg, _, err := CheckConfigFile(path)
	return cfg, err
}

// CheckConfigFile is LoadConfig that also returns the warnings: settings
// that are allowed but likely mistakes. It has no side effects: it creates
// no key or directory and calls nothing on the network.
func CheckConfigFile(path string) (Config, []*ConfigError, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, nil, fmt.Errorf("reading config: %w", err)
	}
	return CheckConfig(path, data)
}

// ParseConfig is LoadConfig on the file's contents; name is used in errors.
func ParseConfig(name string, data []byte) (Config, error) {
	cfg, _, err := CheckConfig(name, data)
	return cfg, err
}

// CheckConfig is CheckConfigFile on the file's contents.
func CheckConfig(name string, data []byte) (Config, []*ConfigError, error) {
	var cfg Config
	fail := func(errs []*ConfigError) (Config, []*ConfigError, error) {
		for _, e := range errs {
			e.File = name
		}
		sort.SliceStable(errs, func(i, j int) bool { return lineOrder(errs[i].Line) < lineOrder(errs[j].Line) })
		return cfg, nil, ConfigErrors(errs)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) { // io.EOF: empty file
		if tabs := tabIndents(data); len(tabs) > 0 {
			return fail(tabs)
		}
		return fail([]*ConfigError{syntaxError(err)})
	}
	var errs []*ConfigError
	lines := map[string]int{}
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		keyLines(root, "", lines)
		checkNode(root, reflect.TypeOf(cfg), "", &errs)
		if err := root.Decode(&cfg); err != nil && len(errs) == 0 {
			return fail([]*ConfigError{syntaxError(err)})
		}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		errs = append(errs, &ConfigError{Line: extra.Line, Msg: "more than one YAML document; put everything in one"})
	}
	cfg = cfg.WithDefaults()
	typed := errs // keys whose values were refused before decoding
	for _, p := range cfg.problems() {
		if !under(p.Key, typed) {
			p.Line = lineOf(p.Key, lines)
			errs = append(errs, p)
		}
	}
	if len(errs) > 0 {
		return fail(errs)
	}
	warns := cfg.warnings()
	for _, w := range warns {
		w.File, w.Line = name, lineOf(w.Key, lines)
	}
	return cfg, warns, nil
}

// lineOrder puts the problems without a line after the others.
func lineOrder(line int) int {
	if line == 0 {
		return math.MaxInt
	}
	return line
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// syntaxError turns a YAML decoder's error into a ConfigError with the line.
func syntaxError(err error) *ConfigError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &ConfigError{Line: line, Msg: msg[len(m[0]):]}
	}
	return &ConfigError{Msg: msg}
}

// tabIndents finds tabs in the indentation, which YAML refuses with a
// message that does not say so.
func tabIndents(data []byte) []*ConfigError {
	var out []*ConfigError
	for i, line := range strings.Split(string(data), "\n") {
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		if strings.Contains(indent, "\t") && strings.TrimSpace(line) != "" {
			out = append(out, &ConfigError{Line: i + 1, Msg: fmt.Sprintf("tab in indentation at line %d; use spaces", i+1)})
		}
	}
	return out
}

// keyLines records the line of every key and list item under n, by
// dotted path ("discovery.static[0].ssh"), as problems name them.
func keyLines(n *yaml.Node, path string, lines map[string]int) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			sub := joinKey(path, n.Content[i].Value)
			if path == "" {
				sub = n.Content[i].Value
			}
			lines[sub] = n.Content[i].Line
			keyLines(n.Content[i+1], sub, lines)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			lines[sub] = item.Line
			keyLines(item, sub, lines)
		}
	}
}

// lineOf is the line of key, or of its nearest parent in the file (a
// missing key is reported where its section is), or 0.
func lineOf(key string, lines map[string]int) int {
	for key != "" {
		if l, ok := lines[key]; ok {
			return l
		}
		cut := max(strings.LastIndexByte(key, '.'), strings.LastIndexByte(key, '['))
		if cut < 0 {
			return 0
		}
		key = key[:cut]
	}
	return 0
}

// under reports whether key is one of the problems' keys or below one.
func under(key string, problems []*ConfigError) bool {
	for _, p := range problems {
		if p.Key != "" && (key == p.Key || strings.HasPrefix(key, p.Key+".") || strings.HasPrefix(key, p.Key+"[")) {
			return true
		}
	}
	return false
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkNode walks the YAML tree against the Go type it will be decoded
// into, so that unknown keys and badly typed values are reported with the
// line and the dotted key rather than a decoder's type name. It appends
// every problem to errs.
func checkNode(n *yaml.Node, t reflect.Type, key string, errs *[]*ConfigError) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bad := func(format string, args ...any) {
		*errs = append(*errs, &ConfigError{Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			bad("want a duration such as 2s or 30m")
			return
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			bad("%q is not a duration (use a number with a unit: 500ms, 2s, 30m, 1h)", n.Value)
		}
		return
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("want a mapping of keys, got %s", describe(n))
			return
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
				*errs = append(*errs, &ConfigError{Line: k.Line, Key: sub, Msg: fmt.Sprintf("unknown key (known here: %s)", strings.Join(known, ", "))})
				continue
			}
			checkNode(v, f.Type, sub, errs)
		}
		return
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad("want a mapping, got %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkNode(n.Content[i+1], t.Elem(), key+"."+n.Content[i].Value, errs)
		}
		return
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("want a list, got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			checkNode(item, t.Elem(), fmt.Sprintf("%s[%d]", key, i), errs)
		}
		return
	}
	if n.Kind != yaml.ScalarNode {
		bad("want a single value, got %s", describe(n))
		return
	}
	switch t.Kind() {
	case reflect.Bool:
		if n.Tag != "!!bool" {
			bad("want true or false, got %q", n.Value)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if _, err := strconv.ParseInt(n.Value, 10, 64); err != nil {
			bad("want a whole number, got %q", n.Value)
		}
	case reflect.Float64, reflect.Float32:
		if _, err := strconv.ParseFloat(n.Value, 64); err != nil {
			bad("want a number, got %q", n.Value)
		}
	}
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
