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
	"time"

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
// restrictions of the entry sshd would use for it (see
// matchAuthorizedKeys), at time now.
func findKey(file string, key ssh.PublicKey, client net.Addr, now time.Time) (restrictions, error) {
	f, err := os.Open(file)
	if err != nil {
		return restrictions{}, fmt.Errorf("%w: %w", ErrKeyNotAllowed, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeysFile))
	if err != nil {
		return restrictions{}, fmt.Errorf("%w: reading %s: %v", ErrKeyNotAllowed, file, err)
	}
	return matchAuthorizedKeys(data, key, client, now)
}

// matchAuthorizedKeys picks the entry sshd would pick
// (auth_check_authkeys_file in OpenSSH's auth2-pubkeyfile.c): the first
// one that holds key and whose conditions hold. An entry is passed over,
// as sshd passes it over, when its options do not parse (an option sshd
// does not know included), when it is a cert-authority line (the key is
// not a certificate), when its from= does not admit client, or when its
// expiry-time has passed. The entry picked is used with all its
// restrictions: if it has an option the gateway cannot carry to the node
// (permitlisten=, environment=, ...), the key is refused rather than
// matched against a later, looser line.
func matchAuthorizedKeys(data []byte, key ssh.PublicKey, client net.Addr, now time.Time) (restrictions, error) {
	want := key.Marshal()
	var passed error
	for len(data) > 0 {
		pub, _, options, rest, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			break // no more parsable lines
		}
		data = rest
		if !bytes.Equal(pub.Marshal(), want) {
			continue
		}
		e, err := parseKeyOptions(options)
		if err == nil {
			err = e.holds(client, now)
		}
		if err != nil {
			passed = err
			continue
		}
		if e.unsupported != "" {
			return restrictions{}, fmt.Errorf("%w: option %q of the matching entry is not supported by poolgate; the key is refused so that its restriction is not lost", ErrKeyNotAllowed, e.unsupported)
		}
		return e.restrictions, nil
	}
	if passed != nil {
		return restrictions{}, fmt.Errorf("%w: %v", ErrKeyNotAllowed, passed)
	}
	return restrictions{}, ErrKeyNotAllowed
}

// keyEntry is an authorized_keys entry's options: its conditions (which
// decide whether sshd uses the entry at all), its restrictions, and the
// first option sshd knows that the gateway cannot enforce.
type keyEntry struct {
	restrictions
	certAuthority bool
	from          string // "" when absent
	expires       time.Time
	unsupported   string
}

// holds reports why the entry is not used for client at now, or nil.
func (e keyEntry) holds(client net.Addr, now time.Time) error {
	switch {
	case e.certAuthority:
		return errors.New("the entry is a cert-authority line and the key is not a certificate")
	case e.from != "" && !matchFrom(e.from, client):
		return fmt.Errorf("client address not allowed by from=%q", e.from)
	case !e.expires.IsZero() && now.After(e.expires):
		return fmt.Errorf("the entry expired at %s", e.expires.Format(time.RFC3339))
	}
	return nil
}

// sshdOptions are the authorized_keys options that sshd knows
// (sshauthopt_parse in OpenSSH's auth-options.c) and the gateway cannot
// enforce: an entry that has one is refused when it is the one picked.
var sshdOptions = map[string]bool{
	"environment": true, "permitopen": true, "permitlisten": true,
	"tunnel": true, "principals": true, "verify-required": true,
}

// parseKeyOptions parses authorized_keys options (sshd(8), AUTHORIZED_KEYS
// FILE FORMAT). An error means the entry does not parse, and sshd would
// pass over it: an option sshd does not know, a missing or unquoted value.
func parseKeyOptions(options []string) (keyEntry, error) {
	var e keyEntry
	r := &e.restrictions
	for _, opt := range options {
		name, value, hasValue := strings.Cut(opt, "=")
		name = strings.ToLower(name)
		if hasValue {
			v, err := unquoteOption(value)
			if err != nil {
				return e, fmt.Errorf("option %s: %v", name, err)
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
		case "cert-authority":
			e.certAuthority = true
		case "command":
			if !hasValue {
				return e, errors.New("option command has no value")
			}
			r.command = value
		case "from":
			if !hasValue {
				return e, errors.New("option from has no value")
			}
			e.from = value
		case "expiry-time":
			if !hasValue {
				return e, errors.New("option expiry-time has no value")
			}
			t, err := parseExpiry(value)
			if err != nil {
				return e, fmt.Errorf("option expiry-time: %v", err)
			}
			if e.expires.IsZero() || t.Before(e.expires) { // sshd keeps the earliest
				e.expires = t
			}
		default:
			if !sshdOptions[name] {
				return e, fmt.Errorf("option %q is unknown", name)
			}
			if e.unsupported == "" {
				e.unsupported = name
			}
		}
	}
	return e, nil
}

// parseExpiry reads an expiry-time value as sshd does (parse_absolute_time
// in OpenSSH's misc.c): YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, in the
// system's local time, or in UTC with a trailing Z.
func parseExpiry(v string) (time.Time, error) {
	loc := time.Local
	if strings.HasSuffix(v, "Z") || strings.HasSuffix(v, "z") {
		v, loc = v[:len(v)-1], time.UTC
	}
	layout := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}[len(v)]
	if layout == "" {
		return time.Time{}, fmt.Errorf("%q is not YYYYMMDD[HHMM[SS]][Z]", v)
	}
	return time.ParseInLocation(layout, v, loc)
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
