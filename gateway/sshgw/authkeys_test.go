package sshgw

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func testKey(t testing.TB) (ssh.PublicKey, string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// TestCheckUser: checkUser takes what who returns, the canonical form
// of a valid name (internal/username has the rule's own table).
func TestCheckUser(t *testing.T) {
	for _, ok := range []string{"alice", "a", "alice.smith", "alice@contoso.com", "svc-1", "_x", "a1"} {
		if err := checkUser(ok); err != nil {
			t.Errorf("checkUser(%q) = %v, want ok", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../etc", "a/b", "-oProxyCommand", ".hidden", "@x", "a b", "a\nb", "é", "a+b", "Alice", strings.Repeat("a", 65)} {
		if err := checkUser(bad); !errors.Is(err, ErrBadUser) {
			t.Errorf("checkUser(%q) = %v, want ErrBadUser", bad, err)
		}
	}
}

func FuzzCheckUser(f *testing.F) {
	for _, s := range []string{"alice", "../x", "a/b", "a@b.c", ".."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if checkUser(name) != nil {
			return
		}
		// The name must stay one path element: cleaning changes nothing.
		p := KeysTemplate("/home/{user}/.ssh/authorized_keys").Path(name)
		if p != "/home/"+name+"/.ssh/authorized_keys" || name == "." || name == ".." {
			t.Fatalf("accepted name %q escapes the template: %s", name, p)
		}
	})
}

func TestKeysTemplate(t *testing.T) {
	for _, tt := range []struct{ tmpl, err string }{
		{"/home/{user}/.ssh/authorized_keys", ""},
		{"/share/keys/{user}", ""},
		{"home/{user}/keys", "absolute"},
		{"/etc/ssh/authorized_keys", "{user}"},
		{"/home/{user}/{host}/keys", "braces"},
	} {
		err := KeysTemplate(tt.tmpl).Validate()
		if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Validate(%q) = %v, want %q", tt.tmpl, err, tt.err)
		}
	}
	if got := KeysTemplate("/home/{user}/.ssh/authorized_keys").Path("bob"); got != "/home/bob/.ssh/authorized_keys" {
		t.Errorf("Path(bob) = %s", got)
	}
}

func TestMatchAuthorizedKeys(t *testing.T) {
	key, line := testKey(t)
	_, other := testKey(t)
	client := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5000}
	for _, tt := range []struct {
		name, file string
		want       restrictions
		err        string
	}{
		{"plain", other + "\n" + line + " alice@laptop\n", restrictions{}, ""},
		{"comment and blank lines", "# keys\n\n" + line + "\n", restrictions{}, ""},
		{"absent", other + "\n", restrictions{}, "not in the user's authorized_keys"},
		{"restrict then pty", "restrict,pty " + line, restrictions{noPortForwarding: true, noAgent: true, noX11: true, noUserRC: true}, ""},
		{"no-pty and command", `no-pty,command="echo \"hi\"" ` + line, restrictions{noPTY: true, command: `echo "hi"`}, ""},
		{"from admits", `from="10.1.0.0/16" ` + line, restrictions{}, ""},
		{"from wildcard admits", `from="10.1.2.*,192.0.2.1" ` + line, restrictions{}, ""},
		{"from refuses", `from="192.168.0.0/16" ` + line, restrictions{}, "not allowed by from="},
		{"from negation refuses", `from="10.*,!10.1.2.3" ` + line, restrictions{}, "not allowed by from="},
		{"from host name never matches", `from="*.example.com" ` + line, restrictions{}, "not allowed by from="},
		{"unsupported option refuses the key", `permitopen="localhost:80" ` + line, restrictions{}, `"permitopen" of the matching entry is not supported`},
		// Issue 25, item 5: sshd uses the first entry whose key matches
		// and whose conditions hold; an unenforceable restriction on it
		// is not traded for a later, looser line.
		{"first entry unenforceable, later plain line", `permitlisten="localhost:8080" ` + line + "\n" + line, restrictions{}, `"permitlisten" of the matching entry is not supported`},
		{"first entry environment, later no-pty line", `environment="A=1" ` + line + "\nno-pty " + line, restrictions{}, `"environment" of the matching entry`},
		{"other key's unenforceable entry is no matter", `permitlisten="localhost:8080" ` + other + "\nno-pty " + line, restrictions{noPTY: true}, ""},
		{"from not matching passes to the next line", `from="10.9.9.9" ` + line + "\n" + line, restrictions{}, ""},
		{"from not matching passes over its unenforceable options", `from="10.9.9.9",permitlisten="localhost:8080" ` + line + "\nno-pty " + line, restrictions{noPTY: true}, ""},
		{"from matching is the entry used", `from="10.1.2.3",no-pty ` + line + "\n" + line, restrictions{noPTY: true}, ""},
		{"from matching with unenforceable option refuses", `from="10.1.2.3",permitlisten="localhost:8080" ` + line + "\n" + line, restrictions{}, `"permitlisten" of the matching entry`},
		{"expired entry passes to the next line", `expiry-time="20260101",permitlisten="localhost:8080" ` + line + "\nno-pty " + line, restrictions{noPTY: true}, ""},
		{"expired alone", `expiry-time="202601010000Z" ` + line, restrictions{}, "expired"},
		{"not yet expired is used", `expiry-time="20270101000000Z",no-pty ` + line + "\n" + line, restrictions{noPTY: true}, ""},
		{"bad expiry-time passes the line over", `expiry-time="2027",no-pty ` + line + "\n" + line, restrictions{}, ""},
		{"cert-authority line is not for a plain key", `cert-authority,no-pty ` + line + "\n" + line, restrictions{}, ""},
		{"option sshd does not know passes the line over", `no-such-option ` + line + "\nno-pty " + line, restrictions{noPTY: true}, ""},
		{"option sshd does not know, alone", `no-such-option ` + line, restrictions{}, `"no-such-option" is unknown`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := matchAuthorizedKeys([]byte(tt.file), key, client, testNow)
			if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("restrictions = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// testNow is the clock of the authorized_keys tests: 2026-12-07 12:00 UTC.
var testNow = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func TestParseExpiry(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Time
	}{
		{"20261207Z", time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)},
		{"202612071530Z", time.Date(2026, 12, 7, 15, 30, 0, 0, time.UTC)},
		{"20261207153045Z", time.Date(2026, 12, 7, 15, 30, 45, 0, time.UTC)},
		{"20261207", time.Date(2026, 12, 7, 0, 0, 0, 0, time.Local)},
	} {
		got, err := parseExpiry(tt.in)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseExpiry(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "Z", "2026", "2026120", "2026120715", "20261307", "2026120715304", "x0261207", "20261207153045ZZ"} {
		if _, err := parseExpiry(bad); err == nil {
			t.Errorf("parseExpiry(%q) accepted", bad)
		}
	}
}

func TestCertPermissions(t *testing.T) {
	p := restrictions{noPTY: true, command: "rsync --server"}.certPermissions()
	if _, ok := p.Extensions["permit-pty"]; ok {
		t.Error("no-pty key got permit-pty")
	}
	if _, ok := p.Extensions["permit-port-forwarding"]; !ok {
		t.Error("port forwarding dropped without a restriction")
	}
	if p.CriticalOptions["force-command"] != "rsync --server" {
		t.Errorf("force-command = %q", p.CriticalOptions["force-command"])
	}
}

func FuzzMatchAuthorizedKeys(f *testing.F) {
	key, line := testKey(f)
	f.Add([]byte(line))
	f.Add([]byte(`restrict,command="x",from="10.*" ` + line))
	f.Add([]byte(`from="!*" ` + line))
	f.Add([]byte(`permitlisten="localhost:8080" ` + line + "\n" + line))
	f.Add([]byte(`from="10.9.9.9" ` + line + "\nno-pty " + line))
	f.Add([]byte(`expiry-time="20260101",environment="A=1" ` + line + "\n" + line))
	f.Add([]byte(`cert-authority ` + line + "\n" + `expiry-time="20270101120000Z" ` + line))
	client := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 1}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := matchAuthorizedKeys(data, key, client, testNow)
		if err != nil && r != (restrictions{}) {
			t.Fatalf("error %v with restrictions %+v", err, r)
		}
	})
}

// TestAuthorizedKeysFirstEntry is issue 25, item 5, with a real client:
// the entry sshd would use decides, not a later line for the same key.
func TestAuthorizedKeysFirstEntry(t *testing.T) {
	dir := t.TempDir()
	g := newTestGW(t, func(c *Config) { c.AuthorizedKeys = KeysTemplate(dir + "/{user}") })
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(g.userKey.PublicKey())))
	fp := ssh.FingerprintSHA256(g.userKey.PublicKey())

	writeFile(t, dir+"/alice", []byte(`permitlisten="localhost:8080" `+line+"\n"+line+"\n"))
	c, banner, err := dialBanner(g.addr, "alice", g.userKey)
	if err == nil {
		c.Close()
		t.Fatal("a key whose first entry has permitlisten= logged in through a later plain line")
	}
	if want := "key " + fp + " is not authorized for alice"; !strings.Contains(banner, want) {
		t.Fatalf("banner %q, want %q", banner, want)
	}

	writeFile(t, dir+"/alice", []byte(`from="10.9.9.9" `+line+"\n"+line+"\n"))
	c, banner, err = dialBanner(g.addr, "alice", g.userKey)
	if err != nil {
		t.Fatalf("from= for another address, then a plain line: %v, banner %q", err, banner)
	}
	c.Close()
}
