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
)

// The ARM template functions that the evaluator (armeval_test.go) knows,
// with stand-ins from armWorld for what only Azure knows.

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
		case strings.Contains(id, "/Microsoft.Storage/storageAccounts/") && !strings.Contains(id[strings.Index(id, "/Microsoft.Storage/storageAccounts/")+len("/Microsoft.Storage/storageAccounts/"):], "/"):
			// As Azure's public cloud gives them, with the trailing slash.
			ep := func(svc string) string { return "https://" + name + "." + svc + ".core.windows.net/" }
			return map[string]any{"primaryEndpoints": map[string]any{"blob": ep("blob"), "file": ep("file"), "queue": ep("queue"), "table": ep("table"), "dfs": ep("dfs"), "web": "https://" + name + ".z6.web.core.windows.net/"}}, nil
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
		// Arrays (every argument an array) join into one array; else
		// strings.
		if len(args) > 0 && isArray(args[0]) {
			out := []any{}
			for i, a := range args {
				x, ok := a.([]any)
				if !ok {
					return nil, fmt.Errorf("concat: argument %d is %T among arrays", i, a)
				}
				out = append(out, x...)
			}
			return out, nil
		}
		var b strings.Builder
		for _, a := range args {
			b.WriteString(str(a))
		}
		return b.String(), nil
	case "join":
		// join(array of strings, delimiter): Azure refuses other elements.
		a, ok := args[0].([]any)
		if !ok {
			return nil, fmt.Errorf("join(%T)", args[0])
		}
		parts := make([]string, len(a))
		for i, x := range a {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("join: element %d is %T, want a string", i, x)
			}
			parts[i] = s
		}
		return strings.Join(parts, str(args[1])), nil
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
	case "endswith":
		return strings.HasSuffix(strings.ToLower(str(args[0])), strings.ToLower(str(args[1]))), nil
	case "startswith":
		return strings.HasPrefix(strings.ToLower(str(args[0])), strings.ToLower(str(args[1]))), nil
	case "substring":
		// substring(string, startIndex [, length]): Azure fails out of
		// range.
		s := str(args[0])
		n, err := ints(fn, args[1:])
		if err != nil {
			return nil, err
		}
		start, end := n[0], int64(len(s))
		if len(n) > 1 {
			end = start + n[1]
		}
		if start < 0 || end < start || end > int64(len(s)) {
			return nil, fmt.Errorf("substring(%q, %v): out of range", s, n)
		}
		return s[start:end], nil
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

func isArray(v any) bool { _, ok := v.([]any); return ok }
