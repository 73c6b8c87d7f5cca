package rdg

import (
	"fmt"
	"strings"
)

// File is an .rdp file that opens a user's node through the RD Gateway,
// with Microsoft's documented settings ("Supported RDP properties"):
//
//	full address:s:      the target the client asks the gateway for
//	gatewayhostname:s:   the gateway (host:port)
//	gatewayusagemethod:i:1        always use the gateway
//	gatewayprofileusagemethod:i:1 use these gateway settings, not the user's defaults
//	gatewaycredentialssource:i:5  cookie-based authentication: the token
//	gatewayaccesstoken:s:         the token
//	username:s:          the user (the node's logon still asks for the password)
type File struct {
	Target  string // full address
	Gateway string // gatewayhostname
	Token   string // gatewayaccesstoken
	User    string // username
}

// Bytes renders the file: CRLF lines, as mstsc writes them.
func (f File) Bytes() ([]byte, error) {
	for k, v := range map[string]string{"full address": f.Target, "gatewayhostname": f.Gateway, "gatewayaccesstoken": f.Token, "username": f.User} {
		if v == "" {
			return nil, fmt.Errorf(".rdp file: %s is empty", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf(".rdp file: %s holds a line break", k)
		}
	}
	var b strings.Builder
	line := func(k, typ, v string) { fmt.Fprintf(&b, "%s:%s:%s\r\n", k, typ, v) }
	line("full address", "s", f.Target)
	line("gatewayhostname", "s", f.Gateway)
	line("gatewayusagemethod", "i", "1")
	line("gatewayprofileusagemethod", "i", "1")
	line("gatewaycredentialssource", "i", "5")
	line("gatewayaccesstoken", "s", f.Token)
	line("username", "s", f.User)
	line("prompt for credentials", "i", "0")
	return []byte(b.String()), nil
}
