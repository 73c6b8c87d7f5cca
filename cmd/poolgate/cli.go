package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/internal/username"
)

// adminClient talks to a running gateway's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// clientFlags adds --admin, --token and --json to fs.
func clientFlags(fs *flag.FlagSet) (base, token *string, asJSON *bool) {
	defBase := os.Getenv("POOLGATE_ADMIN")
	if defBase == "" {
		defBase = "http://127.0.0.1:9090"
	}
	base = fs.String("admin", defBase, "admin API URL (env POOLGATE_ADMIN)")
	token = fs.String("token", os.Getenv("POOLGATE_TOKEN"), "bearer token (env POOLGATE_TOKEN)")
	asJSON = fs.Bool("json", false, "print the API's JSON")
	return
}

// parseWithArgs parses flags that may come before or after positional
// arguments ("drain node-1 --admin URL") and returns the positionals.
func parseWithArgs(fs *flag.FlagSet, args []string) ([]string, int) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		if fs.NArg() == 0 {
			return pos, -1
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (c *adminClient) do(method, path string, out any) error { return c.doBody(method, path, nil, out) }

// doBody is do with a JSON request body (nil: none).
func (c *adminClient) doBody(method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, strings.TrimRight(c.base, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("admin URL %q: %w", c.base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The transport's error may quote what the server sent (a
		// malformed header line), hence term.
		return fmt.Errorf("cannot reach the admin API at %s: %s (is poolgate serve running? --admin or POOLGATE_ADMIN set the address)", c.base, term(unwrapURLError(err).Error()))
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the admin API's answer: %s", term(err.Error()))
	}
	if resp.StatusCode != http.StatusOK {
		var e admin.ErrorJSON
		if json.Unmarshal(answer, &e) == nil && e.Error != "" {
			if resp.StatusCode == http.StatusUnauthorized {
				return fmt.Errorf("%s (pass --token or set POOLGATE_TOKEN)", term(e.Error))
			}
			return errors.New(term(e.Error))
		}
		return fmt.Errorf("admin API answered %s", term(resp.Status))
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = answer
		return nil
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("admin API answered something other than the expected JSON: %w", err)
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// printJSON prints the API's answer indented, with no control character
// in it (termJSON); an answer that is not JSON is printed as term shows
// a string.
func printJSON(w io.Writer, raw json.RawMessage) {
	var buf bytes.Buffer
	if json.Indent(&buf, raw, "", "  ") != nil {
		fmt.Fprintln(w, term(strings.TrimSpace(string(raw))))
		return
	}
	fmt.Fprintln(w, strings.TrimSpace(termJSON(buf.Bytes())))
}

// fetch GETs path from the admin API and, with --json, prints the answer.
// It returns the body to decode, or the exit status when done.
func fetch(cmd string, c *adminClient, path string, asJSON bool, stdout, stderr io.Writer) (json.RawMessage, int) {
	var raw json.RawMessage
	if err := c.do("GET", path, &raw); err != nil {
		fmt.Fprintf(stderr, "poolgate %s: %v\n", cmd, err)
		return nil, 1
	}
	if asJSON {
		printJSON(stdout, raw)
		return nil, 0
	}
	return raw, -1
}

func cmdNodes(args []string, stdout, stderr io.Writer) int {
	fs := flags("nodes", stderr)
	base, token, asJSON := clientFlags(fs)
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "poolgate nodes: unexpected argument %q\n", pos[0])
		return 2
	}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	raw, code := fetch("nodes", c, "/api/nodes", *asJSON, stdout, stderr)
	if code >= 0 {
		return code
	}
	var resp admin.NodesJSON
	if err := json.Unmarshal(raw, &resp); err != nil {
		fmt.Fprintln(stderr, "poolgate nodes:", err)
		return 1
	}
	if d := resp.Discovery; d.Stale {
		since := "never listed"
		if d.LastSuccess != nil {
			since = "last good listing " + ago(*d.LastSuccess)
		}
		fmt.Fprintf(stdout, "WARNING: %s discovery is failing (%s); showing the last good node set.\n  %s\n", term(d.Source), since, term(d.Error))
	}
	if resp.State.Backend == "redis" && !resp.State.Degraded {
		fmt.Fprintf(stdout, "Whole pool, shared through Redis (asked gateway %s).\n", term(resp.State.Replica))
	}
	if resp.State.Degraded {
		fmt.Fprintf(stdout, "WARNING: gateway %s cannot reach the shared state (Redis); it routes from its own view, and the counts below are its own sessions only.\n", term(resp.State.Replica))
	}
	if resp.Discovery.Starting {
		fmt.Fprintln(stdout, "A node is starting (scale from zero); waiting users are logged in when it is up.")
	}
	if c := resp.Discovery.Capacity; c != nil {
		fmt.Fprintln(stdout, capacityLine(*c))
	}
	rdp := false
	for _, n := range resp.Nodes {
		rdp = rdp || n.RDP != ""
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	rdpCol := func(v string) string {
		if rdp {
			return v + "\t"
		}
		return ""
	}
	fmt.Fprintln(tw, "NODE\tSTATE\tSSH\tHTTP\t"+rdpCol("RDP")+"CPU\tMEM\tGPU\tUSERS\tPINNED\tHEALTH\tSINCE")
	total := admin.SessionCount{}
	for _, n := range resp.Nodes {
		state := term(n.State)
		if n.State == "draining" && n.Sessions.SSH+n.Sessions.HTTP+n.Sessions.RDP == 0 {
			state = "draining (empty: safe to remove)"
		}
		if n.Protected {
			state += ", protected"
		}
		users := strings.Join(termAll(n.Users), ",")
		if users == "" {
			users = "-"
		}
		health := term(n.Health)
		if n.HTTPState == "down" || n.HTTPState == "unchecked" {
			health += "; hub " + n.HTTPState + ": " + term(n.HTTPHealth)
		}
		if n.RDPState == "down" || n.RDPState == "unchecked" {
			health += "; rdp " + n.RDPState + ": " + term(n.RDPHealth)
		}
		cpu, mem, gpu := loadCols(n.Load)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s%s\t%s\t%s\t%s\t%d\t%s\t%s\n", term(n.Name), state, n.Sessions.SSH, n.Sessions.HTTP,
			rdpCol(fmt.Sprint(n.Sessions.RDP)), cpu, mem, gpu, users, n.Pinned, health, ago(n.Changed))
		total.SSH += n.Sessions.SSH
		total.HTTP += n.Sessions.HTTP
		total.RDP += n.Sessions.RDP
	}
	fmt.Fprintf(tw, "TOTAL (%d nodes)\t\t%d\t%d\t%s\t\t\t\t\t\t\n", len(resp.Nodes), total.SSH, total.HTTP, rdpCol(fmt.Sprint(total.RDP)))
	_ = tw.Flush()
	scrapeErrors(stdout, resp.Nodes)
	return 0
}

// scrapeErrors lists, under the nodes table, why the last load scrape of
// each node that has one failed.
func scrapeErrors(w io.Writer, nodes []admin.NodeJSON) {
	first := true
	for _, n := range nodes {
		if n.Load.Error == "" {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nLoad scrape failing (the node's figures are its last good ones, if any):")
			first = false
		}
		fmt.Fprintf(w, "  %s: %s\n", term(n.Name), term(n.Load.Error))
	}
}

// loadCols formats a node's load for poolgate nodes: CPU as the run queue
// per CPU, memory and GPU as percentages in use (GPU: use and memory), "-"
// for what is not measured, and a "?" after figures too old to be used.
func loadCols(l admin.LoadJSON) (cpu, mem, gpu string) {
	mark := ""
	if l.Stale {
		mark = "?"
	}
	pct := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.0f%%", *v*100) + mark
	}
	cpu = "-"
	if l.CPU != nil {
		cpu = fmt.Sprintf("%.2f", *l.CPU) + mark
	}
	mem, gpu = pct(l.Memory), pct(l.GPU)
	if l.GPUMemory != nil {
		gpu += "/" + pct(l.GPUMemory)
	}
	return cpu, mem, gpu
}

func cmdSessions(args []string, stdout, stderr io.Writer) int {
	fs := flags("sessions", stderr)
	base, token, asJSON := clientFlags(fs)
	node := fs.String("node", "", "only sessions on this node")
	user := fs.String("user", "", "only this user's sessions")
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "poolgate sessions: unexpected argument %q\n", pos[0])
		return 2
	}
	if *user != "" {
		// Pins are filtered here, by the name the gateway keys them by.
		u, err := username.Canonical(*user)
		if err != nil {
			fmt.Fprintf(stderr, "poolgate sessions: --user: %v\n", err)
			return 2
		}
		*user = u
	}
	q := url.Values{}
	if *node != "" {
		q.Set("node", *node)
	}
	if *user != "" {
		q.Set("user", *user)
	}
	path := "/api/sessions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	raw, code := fetch("sessions", c, path, *asJSON, stdout, stderr)
	if code >= 0 {
		return code
	}
	var resp admin.SessionsJSON
	if err := json.Unmarshal(raw, &resp); err != nil {
		fmt.Fprintln(stderr, "poolgate sessions:", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	shared := false
	for _, s := range resp.Sessions {
		shared = shared || s.Replica != ""
	}
	if shared {
		fmt.Fprintln(tw, "ID\tUSER\tNODE\tPROTOCOL\tCLIENT\tSTARTED\tGATEWAY")
	} else {
		fmt.Fprintln(tw, "ID\tUSER\tNODE\tPROTOCOL\tCLIENT\tSTARTED")
	}
	for _, s := range resp.Sessions {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s", s.ID, term(s.User), term(s.Node), term(s.Protocol), term(s.Client), ago(s.Started))
		if shared {
			fmt.Fprintf(tw, "\t%s", term(s.Replica))
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "%d sessions\n", len(resp.Sessions))
	var pins admin.PinsJSON
	if err := c.do("GET", "/api/pins", &pins); err != nil {
		fmt.Fprintln(stderr, "poolgate sessions: pins:", err)
		return 1
	}
	printPins(stdout, pins.Pins, *node, *user)
	return 0
}

func cmdDrain(action string, args []string, stdout, stderr io.Writer) int {
	fs := flags(action, stderr)
	base, token, asJSON := clientFlags(fs)
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "poolgate %s: name exactly one node: poolgate %s NODE\n", action, action)
		return 2
	}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	var raw json.RawMessage
	if err := c.do("POST", "/api/nodes/"+url.PathEscape(pos[0])+"/"+action, &raw); err != nil {
		fmt.Fprintf(stderr, "poolgate %s: %v\n", action, err)
		return 1
	}
	if *asJSON {
		printJSON(stdout, raw)
		return 0
	}
	var resp admin.DrainJSON
	_ = json.Unmarshal(raw, &resp)
	fmt.Fprintf(stdout, "%s: %s (%d ssh, %d http sessions open)\n", term(resp.Node), term(resp.State), resp.Sessions.SSH, resp.Sessions.HTTP)
	if action == "drain" {
		fmt.Fprintln(stdout, "New users go elsewhere; users already there keep reaching it. 'poolgate nodes' shows when it is empty.")
	}
	return 0
}

// ago renders a past time as a short age.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String() + " ago"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return t.Format("2006-01-02 15:04")
}

func cmdScaleIn(args []string, stdout, stderr io.Writer) int {
	fs := flags("scale-in", stderr)
	base, token, asJSON := clientFlags(fs)
	idle := fs.Duration("idle", 0, "delete instances that have had no session for at least this long (required, e.g. 2h)")
	keep := fs.Int("keep", 0, "keep at least this many instances running")
	dryRun := fs.Bool("dry-run", false, "only say what would be deleted")
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "poolgate scale-in: unexpected argument %q\n", pos[0])
		return 2
	}
	if *idle == 0 {
		fmt.Fprintln(stderr, "poolgate scale-in: --idle is required: how long an instance must have had no session, e.g. --idle 2h")
		return 2
	}
	q := url.Values{"idle": {idle.String()}, "keep": {fmt.Sprint(*keep)}, "dry_run": {fmt.Sprint(*dryRun)}}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 2 * time.Minute}}
	var raw json.RawMessage
	if err := c.do("POST", "/api/scale-in?"+q.Encode(), &raw); err != nil {
		fmt.Fprintf(stderr, "poolgate scale-in: %v\n", err)
		return 1
	}
	if *asJSON {
		printJSON(stdout, raw)
		return 0
	}
	var res admin.ScaleInJSON
	if err := json.Unmarshal(raw, &res); err != nil {
		fmt.Fprintln(stderr, "poolgate scale-in:", err)
		return 1
	}
	verb := "Deleting"
	if res.DryRun {
		verb = "Would delete"
	}
	if len(res.Deleted) == 0 {
		fmt.Fprintf(stdout, "No instance has been idle for %s; nothing to delete.\n", *idle)
	} else {
		fmt.Fprintf(stdout, "%s %d idle instances:\n", verb, len(res.Deleted))
		for _, d := range res.Deleted {
			fmt.Fprintf(stdout, "  %s (instance %s), idle %s\n", term(d.Node), term(d.InstanceID), term(d.Idle))
		}
	}
	if len(res.Kept) > 0 {
		fmt.Fprintln(stdout, "Kept:")
		for _, k := range res.Kept {
			fmt.Fprintf(stdout, "  %s (instance %s): %s\n", term(k.Node), term(k.InstanceID), term(k.Reason))
		}
	}
	if !res.DryRun && len(res.Deleted) > 0 {
		fmt.Fprintln(stdout, "They are drained now and leave 'poolgate nodes' once Azure has deleted them.")
	}
	return 0
}

// capacityLine is the capacity controller's state in one line.
func capacityLine(c admin.CapacityJSON) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Capacity: %d spare(s) of %d wanted, %d instance(s) starting", c.Spares, c.WarmSpares, c.Starting)
	if !c.Leading {
		b.WriteString("; another gateway acts on the scale set")
	}
	if c.LastAction != "" && c.LastActionAt != nil {
		fmt.Fprintf(&b, "; last: %s, %s", term(c.LastAction), ago(*c.LastActionAt))
	}
	if c.Error != "" {
		fmt.Fprintf(&b, "\nWARNING: the capacity controller could not act: %s", term(c.Error))
	}
	return b.String()
}
