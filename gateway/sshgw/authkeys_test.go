package sshgw

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"testing"

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
		{"unsupported option skips the entry", `permitopen="localhost:80" ` + line, restrictions{}, `"permitopen" is not supported`},
		{"a later usable entry wins", `environment="A=1" ` + line + "\nno-pty " + line, restrictions{noPTY: true}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := matchAuthorizedKeys([]byte(tt.file), key, client)
			if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("restrictions = %+v, want %+v", got, tt.want)
			}
		})
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
	client := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 1}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := matchAuthorizedKeys(data, key, client)
		if err != nil && r != (restrictions{}) {
			t.Fatalf("error %v with restrictions %+v", err, r)
		}
	})
}
