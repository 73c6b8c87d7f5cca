package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/poolgate/poolgate/gateway/admin"
)

// hostile are strings a compromised or buggy gateway (or a node's health
// message, or a user name let in by an older gateway) could send: each
// would act on the operator's terminal if printed raw.
var hostile = []string{
	"\x1b[31mred\x1b[0m", "title\x1b]0;owned\x07", "bell\x07", "del\x7f", "csi\u009b2J",
	"rtl\u202etxt", "tab\tcolumn", "line\nbreak", "cr\roverwrite", "bad\xffutf8",
}

// controlIn returns the first character of s a terminal could act on (a
// C0 control other than newline, DEL, a C1 control, a bidi or other
// format character, a byte that is not UTF-8), or "" if there is none.
func controlIn(s string) string {
	if !utf8.ValidString(s) {
		return "a byte that is not UTF-8"
	}
	for _, r := range s {
		switch {
		case r == '\n':
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0, r >= 0x200b && r <= 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return string(r)
		}
	}
	return ""
}

// hostileAPI is a fake admin API that puts the hostile strings in every
// field the CLI prints.
func hostileAPI(t *testing.T) string {
	t.Helper()
	h := func(i int) string { return hostile[i%len(hostile)] }
	now := time.Now().UTC()
	var nodes admin.NodesJSON
	nodes.Discovery = admin.DiscoveryJSON{Source: h(0), Stale: true, Error: h(1)}
	nodes.State = admin.StateJSON{Backend: "redis", Degraded: true, Replica: h(2)}
	for i := range hostile {
		nodes.Nodes = append(nodes.Nodes, admin.NodeJSON{Name: h(i), State: h(i + 1), Users: []string{h(i + 2), h(i + 3)},
			Health: h(i + 4), HTTPState: "down", HTTPHealth: h(i + 5), RDP: "x", RDPState: "down", RDPHealth: h(i + 6), Changed: now})
	}
	var sessions admin.SessionsJSON
	var pins admin.PinsJSON
	for i := range hostile {
		sessions.Sessions = append(sessions.Sessions, admin.SessionJSON{ID: uint64(i), User: h(i), Node: h(i + 1), Protocol: h(i + 2), Client: h(i + 3), Started: now, Replica: h(i + 4)})
		pins.Pins = append(pins.Pins, admin.PinJSON{User: h(i), Node: h(i + 1), By: h(i + 2), Sessions: 1})
	}
	scale := admin.ScaleInJSON{Deleted: []admin.ScaleInNodeJSON{{Node: h(0), InstanceID: h(1), Idle: h(2)}}, Kept: []admin.ScaleInNodeJSON{{Node: h(3), InstanceID: h(4), Reason: h(5)}}}
	answers := map[string]any{
		"GET /api/nodes":            nodes,
		"GET /api/sessions":         sessions,
		"GET /api/pins":             pins,
		"POST /api/nodes/n/drain":   admin.DrainJSON{Node: h(0), State: h(1)},
		"POST /api/users/u/pin":     admin.PinJSON{User: h(2), Node: h(3)},
		"DELETE /api/users/u/pin":   admin.PinJSON{User: h(4)},
		"POST /api/scale-in":        scale,
		"POST /api/nodes/bad/drain": admin.ErrorJSON{Error: "no node named " + h(0), Status: 404},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		if r.URL.Path == "/api/nodes/raw/drain" {
			// Not JSON: a raw escape inside a string.
			w.Write([]byte("{\"node\": \"\x1b[2J\"}"))
			return
		}
		a, ok := answers[key]
		if !ok {
			t.Errorf("unexpected request %s", key)
			http.NotFound(w, r)
			return
		}
		b, _ := json.Marshal(a) // writes DEL, C1 and bidi characters raw, as JSON allows
		if e, ok := a.(admin.ErrorJSON); ok {
			w.WriteHeader(e.Status)
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestCLIWritesNoControlCharacters is issue 25 item 4 in the CLI: every
// field the admin API sent is printed so that the terminal shows it and
// acts on none of it, in the tables, in messages, in errors and in --json.
func TestCLIWritesNoControlCharacters(t *testing.T) {
	url := hostileAPI(t)
	for _, args := range [][]string{
		{"nodes"}, {"nodes", "--json"},
		{"sessions"}, {"sessions", "--json"},
		{"drain", "n"}, {"drain", "n", "--json"}, {"drain", "bad"}, {"drain", "raw"}, {"drain", "raw", "--json"},
		{"pin", "u", "node-1"}, {"pin", "u", "node-1", "--json"},
		{"unpin", "u"}, {"unpin", "u", "--json"},
		{"scale-in", "--idle", "2h"}, {"scale-in", "--idle", "2h", "--json"},
	} {
		code, out, errs := runCmd(append(args, "--admin", url)...)
		if code > 1 || out+errs == "" {
			t.Errorf("%v: exit %d, %q %q", args, code, out, errs)
		}
		if c := controlIn(out); c != "" {
			t.Errorf("%v wrote %q to stdout:\n%s", args, c, out)
		}
		if c := controlIn(errs); c != "" {
			t.Errorf("%v wrote %q to stderr:\n%s", args, c, errs)
		}
		if args[len(args)-1] == "--json" && args[1] != "raw" && !json.Valid([]byte(out)) {
			t.Errorf("%v: the escaped output is not JSON any more:\n%s", args, out)
		}
	}
	// What was escaped is still there to read.
	_, out, _ := runCmd("sessions", "--admin", url)
	if !strings.Contains(out, `"\x1b[31mred\x1b[0m"`) || !strings.Contains(out, `"rtl\u202etxt"`) || !strings.Contains(out, "bad\ufffdutf8") {
		t.Errorf("sessions does not show the escaped names:\n%s", out)
	}
	_, out, _ = runCmd("sessions", "--json", "--admin", url)
	var back admin.SessionsJSON
	if err := json.Unmarshal([]byte(out), &back); err != nil || back.Sessions[3].User != "del\x7f" || back.Sessions[5].User != "rtl\u202etxt" {
		t.Errorf("sessions --json does not decode to what was sent: %v %+v", err, back.Sessions)
	}
}

func TestTerm(t *testing.T) {
	for in, want := range map[string]string{
		"alice": "alice", "node-1 (10.0.0.4:22)": "node-1 (10.0.0.4:22)", "jürgen": "jürgen", "": "", "\ufffd": "\ufffd",
		"\x1b[31m": `"\x1b[31m"`, "a\tb": `"a\tb"`, "a\u202eb": `"a\u202eb"`, "a\xffb": `"a\xffb"`, "a\u009bb": `"a\u009bb"`,
	} {
		if got := term(in); got != want {
			t.Errorf("term(%q) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"{\n  \"a\": \"x\u007fy\"\n}":  `{` + "\n" + `  "a": "x\u007fy"` + "\n" + `}`,
		`"\u00e9 é \u001b"`:            `"\u00e9 é \u001b"`,
		"\"a\u202eb \U000e0001\"":      `"a\u202eb \udb40\udc01"`,
		"\"bad\xffbyte\"":              `"bad\ufffdbyte"`,
		"\"bidi \u2066isolate\u2069\"": `"bidi \u2066isolate\u2069"`,
	} {
		if got := termJSON([]byte(in)); got != want {
			t.Errorf("termJSON(%q) = %s, want %s", in, got, want)
		}
	}
}
