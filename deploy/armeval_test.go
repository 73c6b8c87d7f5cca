package deploy

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
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

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case bool:
		if v {
			return "True"
		}
		return "False"
	case []any, map[string]any:
		b, _ := json.Marshal(v)
		return string(b)
	}
	return fmt.Sprint(v)
}

func ints(fn string, args []any) ([]int64, error) {
	out := make([]int64, len(args))
	for i, a := range args {
		n, ok := a.(int64)
		if !ok {
			return nil, fmt.Errorf("%s: argument %d is %T, want an int", fn, i, a)
		}
		out[i] = n
	}
	return out, nil
}

func bools(fn string, args []any) ([]bool, error) {
	out := make([]bool, len(args))
	for i, a := range args {
		b, ok := a.(bool)
		if !ok {
			return nil, fmt.Errorf("%s: argument %d is %T, want a bool", fn, i, a)
		}
		out[i] = b
	}
	return out, nil
}

func shortHash(parts ...any) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%v\x00", p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

var formatRE = regexp.MustCompile(`\{\{|\}\}|\{(\d+)\}`)

func (ev *armEval) call(fn string, args []any) (any, error) {
	w := ev.world
	switch strings.ToLower(fn) {
	case "parameters":
		v, ok := ev.params[str(args[0])]
		if !ok {
			return nil, fmt.Errorf("no parameter %v", args[0])
		}
		return v, nil
	case "variables":
		name := str(args[0])
		if v, ok := ev.vars[name]; ok {
			return v, nil
		}
		vars, _ := ev.tpl["variables"].(map[string]any)
		raw, ok := vars[name]
		if !ok {
			return nil, fmt.Errorf("no variable %s", name)
		}
		if ev.varBusy[name] {
			return nil, fmt.Errorf("variable %s refers to itself", name)
		}
		ev.varBusy[name] = true
		v, err := ev.value(raw)
		ev.varBusy[name] = false
		if err != nil {
			return nil, fmt.Errorf("variable %s: %w", name, err)
		}
		ev.vars[name] = v
		return v, nil
	case "resourcegroup":
		return map[string]any{"id": "/subscriptions/" + w.Subscription + "/resourceGroups/" + w.ResourceGroup, "name": w.ResourceGroup, "location": w.Location}, nil
	case "subscription":
		return map[string]any{"id": "/subscriptions/" + w.Subscription, "subscriptionId": w.Subscription, "tenantId": "00000000-0000-0000-0000-0000000000aa"}, nil
	case "uniquestring":
		return shortHash(args...)[:13], nil
	case "guid":
		h := shortHash(args...)
		return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
	case "utcnow":
		return w.Now, nil
	case "copyindex":
		if !ev.inCopy {
			return nil, fmt.Errorf("copyIndex outside a copy loop")
		}
		off := int64(0)
		if len(args) == 1 {
			off, _ = args[0].(int64)
		}
		return int64(ev.copyIndex) + off, nil
	case "resourceid", "subscriptionresourceid":
		var parts []string
		for _, a := range args {
			parts = append(parts, str(a))
		}
		typ := strings.Split(parts[0], "/")
		id := "/subscriptions/" + w.Subscription
		if strings.ToLower(fn) == "resourceid" {
			id += "/resourceGroups/" + w.ResourceGroup
		}
		id += "/providers/" + typ[0]
		for i, n := range parts[1:] {
			if i+1 < len(typ) {
				id += "/" + typ[i+1]
			}
			id += "/" + n
		}
		return id, nil
	case "extensionresourceid":
		// extensionResourceId(scope id, type, name...)
		typ := strings.Split(str(args[1]), "/")
		id := str(args[0]) + "/providers/" + typ[0]
		for i, a := range args[2:] {
			if i+1 < len(typ) {
				id += "/" + typ[i+1]
			}
			id += "/" + str(a)
		}
		return id, nil
	case "listkeys":
		id := str(args[0])
		switch {
		case strings.Contains(id, "/providers/Microsoft.Storage/storageAccounts/"):
			key := w.StorageKey
			if k, ok := w.StorageKeys[id[strings.LastIndex(id, "/")+1:]]; ok {
				key = k
			}
			return map[string]any{"keys": []any{map[string]any{"keyName": "key1", "value": key}}}, nil
		case strings.Contains(id, "/providers/Microsoft.Cache/redis/"):
			return map[string]any{"primaryKey": w.RedisKey, "secondaryKey": w.RedisKey + "2"}, nil
		}
		return nil, fmt.Errorf("listKeys(%s): no stand-in", id)
	case "reference":
		id := str(args[0])
		name := id[strings.LastIndex(id, "/")+1:]
		switch {
		case strings.Contains(id, "/Microsoft.Network/publicIPAddresses/"):
			return map[string]any{"ipAddress": "203.0.113.10", "dnsSettings": map[string]any{"fqdn": "pool-x." + w.Location + ".cloudapp.azure.com"}}, nil
		case strings.Contains(id, "/Microsoft.Cache/redis/"):
			return map[string]any{"hostName": name + ".redis.cache.windows.net", "sslPort": int64(6380)}, nil
		case strings.Contains(id, "/Microsoft.KeyVault/vaults/"):
			return map[string]any{"vaultUri": "https://" + name + ".vault.azure.net/"}, nil
		case strings.Contains(id, "/Microsoft.Compute/virtualMachines/"):
			return map[string]any{"identity": map[string]any{"principalId": shortHash(id)[:32]}}, nil
		}
		return nil, fmt.Errorf("reference(%s): no stand-in", id)
	case "format":
		f := str(args[0])
		var bad error
		out := formatRE.ReplaceAllStringFunc(f, func(m string) string {
			switch m {
			case "{{":
				return "{"
			case "}}":
				return "}"
			}
			i, _ := strconv.Atoi(m[1 : len(m)-1])
			if i+1 >= len(args) {
				bad = fmt.Errorf("format: no argument %d", i)
				return ""
			}
			return str(args[i+1])
		})
		return out, bad
	case "concat":
		var b strings.Builder
		for _, a := range args {
			b.WriteString(str(a))
		}
		return b.String(), nil
	case "replace":
		return strings.ReplaceAll(str(args[0]), str(args[1]), str(args[2])), nil
	case "base64":
		return base64.StdEncoding.EncodeToString([]byte(str(args[0]))), nil
	case "base64tostring":
		b, err := base64.StdEncoding.DecodeString(str(args[0]))
		return string(b), err
	case "uricomponent":
		// JavaScript's encodeURIComponent, which ARM documents it as.
		return strings.NewReplacer("+", "%20", "%21", "!", "%27", "'", "%28", "(", "%29", ")", "%2A", "*", "%7E", "~").Replace(url.QueryEscape(str(args[0]))), nil
	case "string":
		return str(args[0]), nil
	case "int":
		switch v := args[0].(type) {
		case int64:
			return v, nil
		case string:
			return strconv.ParseInt(v, 10, 64)
		}
		return nil, fmt.Errorf("int(%T)", args[0])
	case "tolower":
		return strings.ToLower(str(args[0])), nil
	case "trim":
		return strings.TrimSpace(str(args[0])), nil
	case "length":
		switch v := args[0].(type) {
		case string:
			return int64(len(v)), nil
		case []any:
			return int64(len(v)), nil
		case map[string]any:
			return int64(len(v)), nil
		}
		return nil, fmt.Errorf("length(%T)", args[0])
	case "empty":
		switch v := args[0].(type) {
		case string:
			return v == "", nil
		case []any:
			return len(v) == 0, nil
		case map[string]any:
			return len(v) == 0, nil
		case nil:
			return true, nil
		}
		return false, nil
	case "contains":
		switch v := args[0].(type) {
		case string:
			return strings.Contains(v, str(args[1])), nil
		case map[string]any:
			_, ok := v[str(args[1])]
			return ok, nil
		}
		return nil, fmt.Errorf("contains(%T)", args[0])
	case "equals":
		return fmt.Sprintf("%T%v", args[0], args[0]) == fmt.Sprintf("%T%v", args[1], args[1]), nil
	case "not":
		b, err := bools(fn, args)
		if err != nil {
			return nil, err
		}
		return !b[0], nil
	case "and", "or":
		b, err := bools(fn, args)
		if err != nil {
			return nil, err
		}
		acc := strings.ToLower(fn) == "and"
		for _, x := range b {
			if strings.ToLower(fn) == "and" {
				acc = acc && x
			} else {
				acc = acc || x
			}
		}
		return acc, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "add", "sub", "mul", "div", "mod", "min", "max", "greater", "less", "greaterorequals", "lessorequals":
		n, err := ints(fn, args)
		if err != nil {
			return nil, err
		}
		switch strings.ToLower(fn) {
		case "add":
			return n[0] + n[1], nil
		case "sub":
			return n[0] - n[1], nil
		case "mul":
			return n[0] * n[1], nil
		case "div":
			return n[0] / n[1], nil
		case "mod":
			return n[0] % n[1], nil
		case "min", "max":
			acc := n[0]
			for _, x := range n[1:] {
				if (strings.ToLower(fn) == "min") == (x < acc) {
					acc = x
				}
			}
			return acc, nil
		case "greater":
			return n[0] > n[1], nil
		case "less":
			return n[0] < n[1], nil
		case "greaterorequals":
			return n[0] >= n[1], nil
		default:
			return n[0] <= n[1], nil
		}
	case "createobject":
		m := map[string]any{}
		for i := 0; i+1 < len(args); i += 2 {
			m[str(args[i])] = args[i+1]
		}
		return m, nil
	case "createarray":
		return append([]any{}, args...), nil
	case "json":
		var v any
		if err := json.Unmarshal([]byte(str(args[0])), &v); err != nil {
			return nil, fmt.Errorf("json: %w", err)
		}
		return normalize(v), nil
	}
	return nil, fmt.Errorf("function %s is not known to this evaluator", fn)
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
