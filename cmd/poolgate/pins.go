package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/poolgate/poolgate/gateway/admin"
)

// cmdPin is poolgate pin USER NODE: the user's next sessions, SSH and
// browser alike, go to NODE.
func cmdPin(args []string, stdout, stderr io.Writer) int {
	fs := flags("pin", stderr)
	base, token, asJSON := clientFlags(fs)
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "poolgate pin: name a user and a node: poolgate pin USER NODE")
		return 2
	}
	body, _ := json.Marshal(admin.PinRequest{Node: pos[1]})
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	var raw json.RawMessage
	if err := c.doBody("POST", "/api/users/"+url.PathEscape(pos[0])+"/pin", body, &raw); err != nil {
		fmt.Fprintf(stderr, "poolgate pin: %v\n", err)
		return 1
	}
	if *asJSON {
		printJSON(stdout, raw)
		return 0
	}
	// The answer names the user as the gateway keys them (alice for Alice).
	var pin admin.PinJSON
	if err := json.Unmarshal(raw, &pin); err != nil || pin.User == "" {
		pin.User, pin.Node = pos[0], pos[1]
	}
	fmt.Fprintf(stdout, "%s is pinned to %s: their next sessions go there; sessions open elsewhere go on.\n", term(pin.User), term(pin.Node))
	return 0
}

// cmdUnpin is poolgate unpin USER: the user is placed by load again.
func cmdUnpin(args []string, stdout, stderr io.Writer) int {
	fs := flags("unpin", stderr)
	base, token, asJSON := clientFlags(fs)
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "poolgate unpin: name one user: poolgate unpin USER")
		return 2
	}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	var raw json.RawMessage
	if err := c.do("DELETE", "/api/users/"+url.PathEscape(pos[0])+"/pin", &raw); err != nil {
		fmt.Fprintf(stderr, "poolgate unpin: %v\n", err)
		return 1
	}
	if *asJSON {
		printJSON(stdout, raw)
		return 0
	}
	var pin admin.PinJSON
	if err := json.Unmarshal(raw, &pin); err != nil || pin.User == "" {
		pin.User = pos[0]
	}
	fmt.Fprintf(stdout, "%s is not pinned any more: their next session is placed by load.\n", term(pin.User))
	return 0
}

// printPins lists pins under poolgate sessions, with who chose each node.
func printPins(w io.Writer, pins []admin.PinJSON, node, user string) {
	shown := 0
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range pins {
		if (node != "" && p.Node != node) || (user != "" && p.User != user) {
			continue
		}
		if shown == 0 {
			fmt.Fprintln(w)
			fmt.Fprintln(tw, "USER\tPINNED TO\tCHOSEN BY\tSESSIONS\tPIN ENDS")
		}
		shown++
		ends := "with the last session, then the grace"
		if p.Until != nil {
			ends = "in " + time.Until(*p.Until).Round(time.Minute).String()
		}
		if len(p.Elsewhere) > 0 {
			// Two gateways placed the user apart while Redis was down.
			quoted := make([]string, len(p.Elsewhere))
			for i, n := range p.Elsewhere {
				quoted[i] = term(n)
			}
			ends += "; sessions also on " + strings.Join(quoted, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", term(p.User), term(p.Node), term(p.By), p.Sessions, ends)
	}
	_ = tw.Flush()
	if shown > 0 {
		fmt.Fprintf(w, "%d pins\n", shown)
	}
}
