package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/internal/username"
)

// cmdIdentities is poolgate identities [--user U]: the keys bound to
// users by a sign-in with the identity provider, and until when.
func cmdIdentities(args []string, stdout, stderr io.Writer) int {
	fs := flags("identities", stderr)
	base, token, asJSON := clientFlags(fs)
	user := fs.String("user", "", "only this user's keys")
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "poolgate identities: unexpected argument %q\n", pos[0])
		return 2
	}
	if *user != "" {
		u, err := username.Canonical(*user)
		if err != nil {
			fmt.Fprintf(stderr, "poolgate identities: --user: %v\n", err)
			return 2
		}
		*user = u
	}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	raw, code := fetch("identities", c, "/api/identities", *asJSON, stdout, stderr)
	if code >= 0 {
		return code
	}
	var resp admin.IdentitiesJSON
	if err := json.Unmarshal(raw, &resp); err != nil {
		fmt.Fprintln(stderr, "poolgate identities:", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	shown := 0
	for _, b := range resp.Identities {
		if *user != "" && b.User != *user {
			continue
		}
		if shown == 0 {
			fmt.Fprintln(tw, "USER\tKEY\tTYPE\tSIGNED IN\tFROM\tBOUND UNTIL")
		}
		shown++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s (in %s)\n", term(b.User), term(b.Fingerprint), term(b.KeyType),
			b.Bound.Local().Format("2006-01-02 15:04"), term(b.Client),
			b.Until.Local().Format("2006-01-02 15:04"), time.Until(b.Until).Round(time.Minute))
	}
	_ = tw.Flush()
	if shown == 0 {
		fmt.Fprintln(stdout, "no keys are bound: users sign in at their next connection")
		return 0
	}
	fmt.Fprintf(stdout, "%d keys bound\n", shown)
	return 0
}

// cmdIdentity is poolgate identity revoke USER: the user's bound keys
// are forgotten, so their next connection signs in again (open sessions
// go on).
func cmdIdentity(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "revoke" {
		fmt.Fprintln(stderr, "poolgate identity: the one action is revoke: poolgate identity revoke USER")
		return 2
	}
	fs := flags("identity revoke", stderr)
	base, token, asJSON := clientFlags(fs)
	pos, code := parseWithArgs(fs, args[1:])
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "poolgate identity revoke: name one user: poolgate identity revoke USER")
		return 2
	}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	var raw json.RawMessage
	if err := c.do("DELETE", "/api/identities/"+url.PathEscape(pos[0]), &raw); err != nil {
		fmt.Fprintf(stderr, "poolgate identity revoke: %v\n", err)
		return 1
	}
	if *asJSON {
		printJSON(stdout, raw)
		return 0
	}
	var r admin.RevokedJSON
	if err := json.Unmarshal(raw, &r); err != nil || r.User == "" {
		r.User = pos[0]
	}
	fmt.Fprintf(stdout, "%s: %d bound keys forgotten; their next connection signs in again (open sessions go on).\n", term(r.User), r.Revoked)
	return 0
}
