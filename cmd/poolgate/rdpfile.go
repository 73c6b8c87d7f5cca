package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/internal/atomicfile"
	"github.com/poolgate/poolgate/internal/username"
)

// cmdRDPFile is poolgate rdp-file USER [--node N] [-o FILE]: an .rdp
// file that opens USER's node through the RD Gateway, with a token the
// gateway signed for USER (good for rdp.gateway.token_ttl).
func cmdRDPFile(args []string, stdout, stderr io.Writer) int {
	fs := flags("rdp-file", stderr)
	base, token, _ := clientFlags(fs)
	node := fs.String("node", "", "open this node rather than the one the routing rules give USER")
	out := fs.String("o", "", "write the file here (default: USER.rdp in the current directory; - for standard output)")
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "poolgate rdp-file: name one user: poolgate rdp-file USER [--node N] [-o FILE]")
		return 2
	}
	user, err := username.Canonical(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "poolgate rdp-file: %v\n", err)
		return 2
	}
	body, _ := json.Marshal(admin.RDPFileRequest{Node: *node})
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	var raw json.RawMessage
	if err := c.doBody("POST", "/api/users/"+url.PathEscape(user)+"/rdp-file", body, &raw); err != nil {
		fmt.Fprintf(stderr, "poolgate rdp-file: %v\n", err)
		return 1
	}
	path := *out
	if path == "" {
		path = user + ".rdp"
	}
	if path == "-" {
		_, _ = stdout.Write(raw)
		return 0
	}
	if err := atomicfile.Write(path, raw, 0o600); err != nil {
		fmt.Fprintf(stderr, "poolgate rdp-file: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: opens %s's node through the RD Gateway; its token is good for a few minutes (rdp.gateway.token_ttl) and lets anyone who has the file reach the node's logon as %s, so hand it to %s alone.\n", path, user, user, user)
	return 0
}
