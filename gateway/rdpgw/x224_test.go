package rdpgw

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/internal/username"
)

// The Connection Request xfreerdp 2.11 (Debian freerdp2-x11) sent for
// /u:CONTOSO\alice, recorded at a listener on 2026-12-02: the cookie
// carries the user without the domain; TLS and NLA are requested.
var freerdpAlice = []byte("\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=alice\r\n\x01\x00\x08\x00\x03\x00\x00\x00")

func TestParseConnectionRequest(t *testing.T) {
	tests := []struct {
		name      string
		pkt       []byte
		cookie    string
		token     string
		user      string
		truncated bool
		protos    uint32
	}{
		{"freerdp", freerdpAlice, "alice", "", "alice", false, 3},
		{"mstsc cut to 9", BuildConnectionRequest("Cookie: mstshash=christoph", 0xb), "christoph", "", "christoph", true, 0xb},
		{"domain", BuildConnectionRequest(`Cookie: mstshash=CONTOSO\bob`, 3), `CONTOSO\bob`, "", "bob", false, 3},
		{"upn", BuildConnectionRequest("Cookie: mstshash=bob@contoso.com", 3), "bob@contoso.com", "", "bob", false, 3},
		{"no cookie", BuildConnectionRequest("", 1), "", "", "", false, 1},
		{"routing token", BuildConnectionRequest("Cookie: msts=3640205228.15629.0000", 3), "", "3640205228.15629.0000", "", false, 3},
		{"odd name", BuildConnectionRequest("Cookie: mstshash=a b", 3), "a b", "", "", false, 3},
		{"upper case", BuildConnectionRequest(`Cookie: mstshash=CONTOSO\Alice`, 3), `CONTOSO\Alice`, "", "alice", false, 3},
		{"mstsc cut to 9, upper case", BuildConnectionRequest("Cookie: mstshash=CHRISTOPH", 3), "CHRISTOPH", "", "christoph", true, 3},
		{"escape sequence", BuildConnectionRequest("Cookie: mstshash=\x1b[31mbob", 3), "\x1b[31mbob", "", "", false, 3},
		{"plus", BuildConnectionRequest("Cookie: mstshash=bob+node-1", 3), "bob+node-1", "", "", false, 3},
		{"empty after domain", BuildConnectionRequest(`Cookie: mstshash=DOM\`, 3), `DOM\`, "", "", false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr, err := ParseConnectionRequest(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			user, trunc := cr.User()
			if cr.Cookie != tt.cookie || cr.RoutingToken != tt.token || user != tt.user || trunc != tt.truncated || cr.Protocols != tt.protos || !cr.HasNegReq {
				t.Fatalf("got %+v user %q truncated %v", cr, user, trunc)
			}
			if !bytes.Equal(cr.Raw, tt.pkt) {
				t.Fatal("Raw is not the packet")
			}
			// Reading it from a stream gives the same, and no more.
			r := bytes.NewReader(append(append([]byte(nil), tt.pkt...), 0x16, 0x03))
			cr2, err := ReadConnectionRequest(r, 1024)
			if err != nil || !bytes.Equal(cr2.Raw, tt.pkt) || r.Len() != 2 {
				t.Fatalf("ReadConnectionRequest: %v, %d bytes left", err, r.Len())
			}
		})
	}
}

func TestParseConnectionRequestRefuses(t *testing.T) {
	tooLong := BuildConnectionRequest("Cookie: mstshash="+strings.Repeat("a", 2000), 3)
	bad := map[string][]byte{
		"empty":          {},
		"tls hello":      []byte("\x16\x03\x01\x00\xf1\x01\x00\x00\xed\x03\x03"),
		"http":           []byte("GET / HTTP/1.1\r\n\r\n"),
		"short":          {3, 0, 0, 5, 0},
		"confirm":        []byte("\x03\x00\x00\x0b\x06\xd0\x00\x00\x00\x00\x00"),
		"li mismatch":    []byte("\x03\x00\x00\x0b\x07\xe0\x00\x00\x00\x00\x00"),
		"cookie no crlf": []byte("\x03\x00\x00\x16\x11\xe0\x00\x00\x00\x00\x00Cookie: ab\n"),
	}
	for name, pkt := range bad {
		if _, err := ParseConnectionRequest(pkt); !errors.Is(err, ErrNotRDP) {
			t.Errorf("%s: %v, want ErrNotRDP", name, err)
		}
	}
	if _, err := ReadConnectionRequest(bytes.NewReader(tooLong), 1024); !errors.Is(err, ErrNotRDP) {
		t.Errorf("oversized packet: %v", err)
	}
}

func FuzzParseConnectionRequest(f *testing.F) {
	f.Add(freerdpAlice)
	f.Add(BuildConnectionRequest("Cookie: mstshash=christoph", 0xb))
	f.Add(BuildConnectionRequest("Cookie: msts=3640205228.15629.0000", 3))
	f.Add(BuildConnectionRequest("", 0))
	f.Add([]byte("\x03\x00\x00\x0b\x06\xe0\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cr, err := ParseConnectionRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(cr.Raw, b) {
			t.Fatal("Raw differs from the packet")
		}
		user, _ := cr.User()
		if user != "" && (!username.Valid(user) || strings.Contains(user, "@")) {
			t.Fatalf("unusable user %q accepted", user)
		}
		cr2, err := ReadConnectionRequest(bytes.NewReader(b), 65535)
		if err != nil || cr2.Cookie != cr.Cookie || cr2.RoutingToken != cr.RoutingToken {
			t.Fatalf("reading the same packet: %v %+v", err, cr2)
		}
	})
}
