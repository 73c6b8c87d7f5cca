package sshgw

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/username"
)

// Errors from user and key checks. Users are shown one message for all of
// them, so that nobody can probe which login names exist.
var (
	ErrBadUser       = errors.New("login name not allowed")
	ErrKeyNotAllowed = errors.New("key not in the user's authorized_keys")
)

// checkUser refuses a login name that is not a valid user name in
// canonical form (internal/username): who returns the canonical form of
// every valid name, so what it refuses was sent invalid. The rule keeps
// names safe to put in a path template (no '/', no "..") and in logs (no
// control characters).
func checkUser(name string) error {
	if username.Valid(name) {
		return nil
	}
	if _, err := username.Canonical(name); err != nil {
		return fmt.Errorf("%w: %w", ErrBadUser, err)
	}
	return fmt.Errorf("%w: not in canonical form", ErrBadUser)
}

// KeysTemplate is the authorized_keys path template: an absolute path in
// which "{user}" stands for the login name.
type KeysTemplate string

// Validate checks the template.
func (t KeysTemplate) Validate() error {
	s := string(t)
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("%q is not an absolute path", s)
	}
	if !strings.Contains(s, "{user}") {
		return fmt.Errorf("%q does not contain {user}: every user needs a file of their own", s)
	}
	rest := strings.ReplaceAll(s, "{user}", "")
	if strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("%q: only {user} may appear in braces", s)
	}
	return nil
}

// Path returns the file for user, who must have passed checkUser.
func (t KeysTemplate) Path(user string) string {
	return path.Clean(strings.ReplaceAll(string(t), "{user}", user))
}

// maxKeysFile caps how much of an authorized_keys file is read.
const maxKeysFile = 1 << 20

// restrictions are what an authorized_keys entry limits. They travel to the
// node in the login certificate (force-command, omitted permit-*
// extensions); from= is enforced by the gateway itself.
type restrictions struct {
	noPTY, noPortForwarding, noAgent, noX11, noUserRC bool
	command                                           string
	noTouchRequired                                   bool
}

func (r restrictions) certPermissions() ssh.Permissions {
	p := ssh.Permissions{Extensions: map[string]string{}}
	off := map[string]bool{
		"permit-pty": r.noPTY, "permit-port-forwarding": r.noPortForwarding,
		"permit-agent-forwarding": r.noAgent, "permit-X11-forwarding": r.noX11, "permit-user-rc": r.noUserRC,
	}
	for _, ext := range certExtensions {
		if !off[ext] {
			p.Extensions[ext] = ""
		}
	}
	if r.command != "" {
		p.CriticalOptions = map[string]string{"force-command": r.command}
	}
	return p
}

// findKey looks for key in the authorized_keys file at file and returns the
// restrictions of the first entry that holds it and admits client. Entries
// with options the gateway cannot carry to the node are skipped, and the
// reason is returned if no entry matched, so that the log can say why.
func findKey(file string, key ssh.PublicKey, client net.Addr) (restrictions, error) {
	f, err := os.Open(file)
	if err != nil {
		return restrictions{}, fmt.Errorf("%w: %w", ErrKeyNotAllowed, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeysFile))
	if err != nil {
		return restrictions{}, fmt.Errorf("%w: reading %s: %v", ErrKeyNotAllowed, file, err)
	}
	return matchAuthorizedKeys(data, key, client)
}

// matchAuthorizedKeys is findKey on the file's contents.
func matchAuthorizedKeys(data []byte, key ssh.PublicKey, client net.Addr) (restrictions, error) {
	want := key.Marshal()
	var skipped error
	for len(data) > 0 {
		pub, _, options, rest, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			break // no more parsable lines
		}
		data = rest
		if !bytes.Equal(pub.Marshal(), want) {
			continue
		}
		r, err := parseKeyOptions(options, client)
		if err != nil {
			skipped = err
			continue
		}
		return r, nil
	}
	if skipped != nil {
		return restrictions{}, fmt.Errorf("%w: %v", ErrKeyNotAllowed, skipped)
	}
	return restrictions{}, ErrKeyNotAllowed
}

// parseKeyOptions turns authorized_keys options (sshd(8), AUTHORIZED_KEYS
// FILE FORMAT) into restrictions. Options the certificate cannot carry make
// the entry unusable rather than silently dropped.
func parseKeyOptions(options []string, client net.Addr) (restrictions, error) {
	var r restrictions
	for _, opt := range options {
		name, value, hasValue := strings.Cut(opt, "=")
		name = strings.ToLower(name)
		if hasValue {
			v, err := unquoteOption(value)
			if err != nil {
				return r, fmt.Errorf("option %s: %v", name, err)
			}
			value = v
		}
		switch name {
		case "restrict":
			r.noPTY, r.noPortForwarding, r.noAgent, r.noX11, r.noUserRC = true, true, true, true, true
		case "no-pty":
			r.noPTY = true
		case "pty":
			r.noPTY = false
		case "no-port-forwarding":
			r.noPortForwarding = true
		case "port-forwarding":
			r.noPortForwarding = false
		case "no-agent-forwarding":
			r.noAgent = true
		case "agent-forwarding":
			r.noAgent = false
		case "no-x11-forwarding":
			r.noX11 = true
		case "x11-forwarding":
			r.noX11 = false
		case "no-user-rc":
			r.noUserRC = true
		case "user-rc":
			r.noUserRC = false
		case "no-touch-required":
			r.noTouchRequired = true
		case "command":
			if !hasValue {
				return r, errors.New("option command has no value")
			}
			r.command = value
		case "from":
			if !hasValue {
				return r, errors.New("option from has no value")
			}
			if !matchFrom(value, client) {
				return r, fmt.Errorf("client address not allowed by from=%q", value)
			}
		default:
			return r, fmt.Errorf("option %q is not supported by poolgate; the key is ignored so that its restriction is not lost", name)
		}
	}
	return r, nil
}

// unquoteOption removes the double quotes around an option value and the
// backslashes before inner quotes.
func unquoteOption(v string) (string, error) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", errors.New("value must be in double quotes")
	}
	return strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`), nil
}

// matchFrom applies a from= pattern list to the client's IP address: a
// comma-separated list of address patterns with '*' and '?' wildcards or
// CIDR blocks, each optionally negated with '!'. A negated match refuses;
// otherwise any positive match admits. Host names never match: the
// gateway does no DNS lookups (like sshd with UseDNS no).
func matchFrom(list string, client net.Addr) bool {
	host := client.String()
	if tcp, ok := client.(*net.TCPAddr); ok {
		host = tcp.IP.String()
	} else if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	matched := false
	for _, pat := range strings.Split(list, ",") {
		pat = strings.TrimSpace(pat)
		neg := strings.HasPrefix(pat, "!")
		pat = strings.TrimPrefix(pat, "!")
		var hit bool
		if _, cidr, err := net.ParseCIDR(pat); err == nil {
			hit = ip != nil && cidr.Contains(ip)
		} else if ok, err := path.Match(pat, host); err == nil {
			hit = ok
		}
		if hit && neg {
			return false
		}
		matched = matched || hit
	}
	return matched
}
