package deploy

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// This file evaluates the ARM template as Azure would for a set of
// parameter values, with stand-ins for what only Azure knows (listKeys,
// reference, uniqueString): the parameter checks (type, minValue,
// maxValue, allowedValues, required), conditions, copy loops and the
// expression functions the template uses. It is no full ARM engine: a
// function it does not know is an error, so a template that starts to use
// one makes the tests say so.

// armWorld is what Azure would answer for the functions that read it.
type armWorld struct {
	Subscription  string
	ResourceGroup string
	Location      string
	StorageKey    string // listKeys(storage account).keys[0].value
	// StorageKeys, by account name, overrides StorageKey for that
	// account (each storage account has its own keys).
	StorageKeys map[string]string
	RedisKey    string // listKeys(redis).primaryKey
	Now         string // utcNow()
}

func defaultWorld() armWorld {
	return armWorld{
		Subscription:  "00000000-0000-0000-0000-000000000001",
		ResourceGroup: "pool-rg",
		Location:      "westeurope",
		StorageKey:    "c3RvcmFnZS1rZXk+Pz8/Lw/+abc/def+ghi==",
		RedisKey:      "cmVkaXMta2V5/+/+Pz8+x/y+z=",
		Now:           "20261202T120000Z",
	}
}

// evaluated is a template after evaluation: resources with their
// conditions true, one per copy, every expression replaced by its value.
type evaluated struct {
	Resources []map[string]any
	Outputs   map[string]any
}

// resource returns the evaluated resources of a type.
func (e evaluated) resources(typ string) []map[string]any {
	var out []map[string]any
	for _, r := range e.Resources {
		if r["type"] == typ {
			out = append(out, r)
		}
	}
	return out
}

type armEval struct {
	tpl       map[string]any
	world     armWorld
	params    map[string]any
	vars      map[string]any
	varBusy   map[string]bool
	copyIndex int
	inCopy    bool
}

// evalTemplate evaluates the template text for the given parameters.
func evalTemplate(raw string, params map[string]any, world armWorld) (evaluated, error) {
	var tpl map[string]any
	if err := json.Unmarshal([]byte(raw), &tpl); err != nil {
		return evaluated{}, err
	}
	ev := &armEval{tpl: tpl, world: world, params: map[string]any{}, vars: map[string]any{}, varBusy: map[string]bool{}}
	if err := ev.bindParameters(params); err != nil {
		return evaluated{}, err
	}
	var out evaluated
	rs, _ := tpl["resources"].([]any)
	for _, x := range rs {
		r := x.(map[string]any)
		count := 1
		if c, ok := r["copy"].(map[string]any); ok {
			v, err := ev.value(c["count"])
			if err != nil {
				return out, fmt.Errorf("%v copy count: %w", r["name"], err)
			}
			n, ok := v.(int64)
			if !ok {
				return out, fmt.Errorf("%v copy count is %T", r["name"], v)
			}
			count = int(n)
			ev.inCopy = true
		}
		for i := 0; i < count; i++ {
			ev.copyIndex = i
			if cond, ok := r["condition"]; ok {
				v, err := ev.value(cond)
				if err != nil {
					return out, fmt.Errorf("%v condition: %w", r["name"], err)
				}
				if b, ok := v.(bool); !ok || !b {
					continue
				}
			}
			body := map[string]any{}
			for k, v := range r {
				if k == "condition" || k == "copy" {
					continue
				}
				val, err := ev.value(v)
				if err != nil {
					return out, fmt.Errorf("resource %v %s: %w", r["type"], k, err)
				}
				body[k] = val
			}
			out.Resources = append(out.Resources, body)
		}
		ev.inCopy = false
	}
	outputs, _ := tpl["outputs"].(map[string]any)
	out.Outputs = map[string]any{}
	for name, o := range outputs {
		v, err := ev.value(o.(map[string]any)["value"])
		if err != nil {
			return out, fmt.Errorf("output %s: %w", name, err)
		}
		out.Outputs[name] = v
	}
	return out, nil
}

func (ev *armEval) bindParameters(given map[string]any) error {
	defs, _ := ev.tpl["parameters"].(map[string]any)
	for name := range given {
		if _, ok := defs[name]; !ok {
			return fmt.Errorf("parameter %s is not in the template", name)
		}
	}
	for name, d := range defs {
		def := d.(map[string]any)
		v, ok := given[name]
		if !ok {
			dv, has := def["defaultValue"]
			if !has {
				return fmt.Errorf("parameter %s: no value given and no default (required)", name)
			}
			var err error
			if v, err = ev.value(dv); err != nil {
				return fmt.Errorf("parameter %s default: %w", name, err)
			}
		}
		v = normalize(v)
		typ, _ := def["type"].(string)
		switch strings.ToLower(typ) {
		case "string", "securestring":
			s, ok := v.(string)
			if !ok {
				return fmt.Errorf("parameter %s: want a string, got %T", name, v)
			}
			if n, ok := def["minLength"].(float64); ok && len(s) < int(n) {
				return fmt.Errorf("parameter %s: shorter than minLength %v", name, n)
			}
			if n, ok := def["maxLength"].(float64); ok && len(s) > int(n) {
				return fmt.Errorf("parameter %s: longer than maxLength %v", name, n)
			}
		case "int":
			n, ok := v.(int64)
			if !ok {
				return fmt.Errorf("parameter %s: want an int, got %T", name, v)
			}
			if m, ok := def["minValue"].(float64); ok && n < int64(m) {
				return fmt.Errorf("parameter %s: %d is less than minValue %v", name, n, m)
			}
			if m, ok := def["maxValue"].(float64); ok && n > int64(m) {
				return fmt.Errorf("parameter %s: %d is more than maxValue %v", name, n, m)
			}
		case "bool":
			if _, ok := v.(bool); !ok {
				return fmt.Errorf("parameter %s: want a bool, got %T", name, v)
			}
		case "array":
			if _, ok := v.([]any); !ok {
				return fmt.Errorf("parameter %s: want an array, got %T", name, v)
			}
		case "object", "secureobject":
			if _, ok := v.(map[string]any); !ok {
				return fmt.Errorf("parameter %s: want an object, got %T", name, v)
			}
		default:
			return fmt.Errorf("parameter %s: type %q not handled here", name, typ)
		}
		if allowed, ok := def["allowedValues"].([]any); ok {
			found := false
			for _, a := range allowed {
				if fmt.Sprint(normalize(a)) == fmt.Sprint(v) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("parameter %s: %v is not one of the allowed values %v", name, v, allowed)
			}
		}
		ev.params[name] = v
	}
	return nil
}

// normalize turns JSON numbers into int64, as ARM's ints.
func normalize(v any) any {
	switch v := v.(type) {
	case float64:
		return int64(v)
	case int:
		return int64(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = normalize(x)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			out[k] = normalize(x)
		}
		return out
	}
	return v
}

// value evaluates a JSON value: every string that is an expression.
func (ev *armEval) value(v any) (any, error) {
	switch v := v.(type) {
	case string:
		if strings.HasPrefix(v, "[[") {
			return v[1:], nil
		}
		if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
			p := &exprParser{src: v[1 : len(v)-1]}
			x, err := p.parse()
			if err != nil {
				return nil, fmt.Errorf("%.60q: %w", v, err)
			}
			out, err := ev.eval(x)
			if err != nil {
				return nil, fmt.Errorf("%.60q: %w", v, err)
			}
			return out, nil
		}
		return v, nil
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			val, err := ev.value(x)
			if err != nil {
				return nil, err
			}
			out[i] = val
		}
		return out, nil
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			val, err := ev.value(x)
			if err != nil {
				return nil, err
			}
			out[k] = val
		}
		return out, nil
	}
	return normalize(v), nil
}

// expr is a parsed expression: a literal, a call, or an access on one.
type expr struct {
	lit   any     // literal string or int64, when fn == "" and on == nil
	fn    string  // function name
	args  []*expr // its arguments
	on    *expr   // for a property or index access: the value accessed
	prop  string  // .prop
	index *expr   // [index]
}

type exprParser struct {
	src string
	pos int
}

func (p *exprParser) parse() (*expr, error) {
	x, err := p.expression()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos != len(p.src) {
		return nil, fmt.Errorf("unexpected %q at %d", p.src[p.pos:], p.pos)
	}
	return x, nil
}

func (p *exprParser) space() {
	for p.pos < len(p.src) && p.src[p.pos] == ' ' {
		p.pos++
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)
var numberRE = regexp.MustCompile(`^-?[0-9]+`)

func (p *exprParser) expression() (*expr, error) {
	p.space()
	var x *expr
	rest := p.src[p.pos:]
	switch {
	case strings.HasPrefix(rest, "'"):
		var b strings.Builder
		p.pos++
		for {
			if p.pos >= len(p.src) {
				return nil, fmt.Errorf("unclosed string")
			}
			c := p.src[p.pos]
			p.pos++
			if c == '\'' {
				if p.pos < len(p.src) && p.src[p.pos] == '\'' {
					b.WriteByte('\'')
					p.pos++
					continue
				}
				break
			}
			b.WriteByte(c)
		}
		x = &expr{lit: b.String()}
	case numberRE.MatchString(rest):
		m := numberRE.FindString(rest)
		n, _ := strconv.ParseInt(m, 10, 64)
		p.pos += len(m)
		x = &expr{lit: n}
	case identRE.MatchString(rest):
		name := identRE.FindString(rest)
		p.pos += len(name)
		p.space()
		if p.pos >= len(p.src) || p.src[p.pos] != '(' {
			return nil, fmt.Errorf("%s is not a call", name)
		}
		p.pos++
		x = &expr{fn: name}
		for {
			p.space()
			if p.pos < len(p.src) && p.src[p.pos] == ')' {
				p.pos++
				break
			}
			arg, err := p.expression()
			if err != nil {
				return nil, err
			}
			x.args = append(x.args, arg)
			p.space()
			if p.pos < len(p.src) && p.src[p.pos] == ',' {
				p.pos++
			}
		}
	default:
		return nil, fmt.Errorf("unexpected %q", rest)
	}
	for p.pos < len(p.src) {
		switch p.src[p.pos] {
		case '.':
			p.pos++
			name := identRE.FindString(p.src[p.pos:])
			if name == "" {
				return nil, fmt.Errorf("bad property at %d", p.pos)
			}
			p.pos += len(name)
			x = &expr{on: x, prop: name}
		case '[':
			p.pos++
			idx, err := p.expression()
			if err != nil {
				return nil, err
			}
			p.space()
			if p.pos >= len(p.src) || p.src[p.pos] != ']' {
				return nil, fmt.Errorf("unclosed index")
			}
			p.pos++
			x = &expr{on: x, index: idx}
		default:
			return x, nil
		}
	}
	return x, nil
}

func (ev *armEval) eval(x *expr) (any, error) {
	switch {
	case x.on != nil:
		base, err := ev.eval(x.on)
		if err != nil {
			return nil, err
		}
		if x.index != nil {
			idx, err := ev.eval(x.index)
			if err != nil {
				return nil, err
			}
			switch b := base.(type) {
			case []any:
				i, ok := idx.(int64)
				if !ok || i < 0 || int(i) >= len(b) {
					return nil, fmt.Errorf("index %v out of range", idx)
				}
				return b[i], nil
			case map[string]any:
				return b[fmt.Sprint(idx)], nil
			}
			return nil, fmt.Errorf("cannot index %T", base)
		}
		m, ok := base.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("cannot read .%s of %T", x.prop, base)
		}
		v, ok := m[x.prop]
		if !ok {
			return nil, fmt.Errorf("no property %s", x.prop)
		}
		return v, nil
	case x.fn == "":
		return x.lit, nil
	case x.fn == "if":
		if len(x.args) != 3 {
			return nil, fmt.Errorf("if takes 3 arguments")
		}
		c, err := ev.eval(x.args[0])
		if err != nil {
			return nil, err
		}
		b, ok := c.(bool)
		if !ok {
			return nil, fmt.Errorf("if: condition is %T", c)
		}
		// ARM evaluates only the branch taken.
		if b {
			return ev.eval(x.args[1])
		}
		return ev.eval(x.args[2])
	}
	args := make([]any, len(x.args))
	for i, a := range x.args {
		v, err := ev.eval(a)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	return ev.call(x.fn, args)
}

// baseParams are the parameters every evaluation needs (those without a
// default), as an operator passes them.
func baseParams() map[string]any {
	return map[string]any{
		"adminSshPublicKey":        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBase admin@example",
		"adminSourceAddressPrefix": "203.0.113.7/32",
		"poolgateUrl":              "https://art.blob.core.windows.net/bin/poolgate?sv=2024-11-04&se=2027-01-01T00%3A00Z&sr=b&sp=r&sig=AbC%2Bd%2Fe%3D",
		"jupyterhubCookieSecret":   strings.Repeat("ab", 32),
	}
}

func withParams(over map[string]any) map[string]any {
	p := baseParams()
	for k, v := range over {
		if v == nil {
			delete(p, k)
			continue
		}
		p[k] = v
	}
	return p
}

func mustEval(t *testing.T, params map[string]any, world armWorld) evaluated {
	t.Helper()
	ev, err := evalTemplate(read(t, templatePath), params, world)
	if err != nil {
		t.Fatalf("the template does not evaluate with %v: %v", params, err)
	}
	return ev
}

// dig walks nested maps by keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestTemplateEvaluates(t *testing.T) {
	for _, ha := range []bool{false, true} {
		ev := mustEval(t, withParams(map[string]any{"highAvailability": ha}), defaultWorld())
		want := 1
		if ha {
			want = 2
		}
		if got := len(ev.resources("Microsoft.Compute/virtualMachines")); got != want {
			t.Errorf("highAvailability=%v: %d gateway VMs, want %d", ha, got, want)
		}
		if got := len(ev.resources("Microsoft.Cache/redis")) == 1; got != ha {
			t.Errorf("highAvailability=%v: Redis created = %v", ha, got)
		}
	}
}
