package rdg

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The packets FreeRDP 2.11 sends (spec §4), whole.
func freerdpPackets() [][]byte {
	return [][]byte{
		freerdpHandshake,
		handshakeReq(0),
		tunnelCreateReq("tok"),
		tunnelCreateReq("pg1.eyJ1IjoiYWxpY2UifQ.c2ln"),
		tunnelAuthReq("vm"),
		channelCreateReq("pool", 3389),
		channelCreateReq("n1.example:3389", 3389),
		dataReq([]byte("\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x0b\x00\x00\x00")),
		pkt(pktKeepalive, nil),
		pkt(pktCloseChannelResponse, []byte{0, 0, 0, 0}),
		pkt(pktCloseChannel, []byte{0, 0, 0, 0}),
	}
}

// seedBodies adds every FreeRDP packet's body (and a few broken ones).
func seedBodies(f *testing.F) {
	for _, p := range freerdpPackets() {
		f.Add(p[headerLen:])
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
}

func FuzzReadPacket(f *testing.F) {
	for _, p := range freerdpPackets() {
		f.Add(p, uint32(maxPreAuthPacket))
		f.Add(p, uint32(len(p)))
		f.Add(p, uint32(len(p)-1))
	}
	f.Add(header(pktData, 0xFFFFFFFF), uint32(maxPacket))
	f.Add(header(pktData, 3), uint32(maxPacket))
	f.Fuzz(func(t *testing.T, b []byte, max32 uint32) {
		max := int(max32 % (1 << 17))
		r := bytes.NewReader(b)
		p, err := readPacket(r, max)
		consumed := len(b) - r.Len()
		if err != nil {
			if p.typ != 0 || p.body != nil {
				t.Fatalf("error %v with a packet %+v", err, p)
			}
			if len(b) >= headerLen {
				n := binary.LittleEndian.Uint32(b[4:])
				if (n < headerLen || n > uint32(max)) && consumed > headerLen {
					t.Fatalf("read %d bytes of a packet of length %d it refused (max %d)", consumed, n, max)
				}
			}
			return
		}
		n := headerLen + len(p.body)
		if n > max {
			t.Fatalf("returned a %d-byte packet, max %d", n, max)
		}
		if consumed != n {
			t.Fatalf("consumed %d bytes for a %d-byte packet", consumed, n)
		}
		if int(binary.LittleEndian.Uint32(b[4:])) != n || binary.LittleEndian.Uint16(b) != p.typ || !bytes.Equal(p.body, b[headerLen:n]) {
			t.Fatalf("packet %+v does not match its bytes", p)
		}
	})
}

func FuzzParseHandshakeRequest(f *testing.F) {
	seedBodies(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHandshakeRequest(b)
		if (err == nil) != (len(b) >= 6) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err != nil {
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("error %v is not ErrBadPacket", err)
			}
			return
		}
		if h.major != b[0] || h.minor != b[1] || h.clientVersion != binary.LittleEndian.Uint16(b[2:]) || h.extendedAuth != binary.LittleEndian.Uint16(b[4:]) {
			t.Fatalf("%+v from % x", h, b)
		}
	})
}

func FuzzParseTunnelCreate(f *testing.F) {
	seedBodies(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		tc, err := parseTunnelCreate(b)
		if err != nil {
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("error %v is not ErrBadPacket", err)
			}
			return
		}
		if len(b) < 8 {
			t.Fatalf("took a %d-byte tunnel create", len(b))
		}
		if tc.fields&tunnelCreatePAACookie == 0 {
			if tc.paaCookie != nil {
				t.Fatal("a cookie without the PAA field")
			}
			return
		}
		n := int(binary.LittleEndian.Uint16(b[8:]))
		if len(tc.paaCookie) != n || n > maxCookie || !bytes.Equal(tc.paaCookie, b[10:10+n]) {
			t.Fatalf("cookie of %d bytes, declared %d", len(tc.paaCookie), n)
		}
		_ = cookieToken(tc.paaCookie)
	})
}

func FuzzCookieToken(f *testing.F) {
	f.Add([]byte("pg1.abc.def"))
	f.Add(utf16z("pg1.abc.def"))
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0, 0xff})
	f.Add([]byte{0x00, 0xd8, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, c []byte) {
		s := cookieToken(c)
		if len(s) > 3*len(c) {
			t.Fatalf("%d-byte token from a %d-byte cookie", len(s), len(c))
		}
		// A token is printable ASCII: either spelling gives it back.
		tok := string(c)
		for i := 0; i < len(tok); i++ {
			if tok[i] < 0x21 || tok[i] > 0x7e {
				return
			}
		}
		if tok == "" {
			return
		}
		if got := cookieToken(utf16z(tok)); got != tok {
			t.Fatalf("UTF-16 cookie of %q gave %q", tok, got)
		}
		if got := cookieToken(utf16z(tok)[:2*len(tok)]); got != tok {
			t.Fatalf("UTF-16 cookie of %q without NUL gave %q", tok, got)
		}
		if s != tok {
			t.Fatalf("ASCII cookie %q gave %q", tok, s)
		}
		if got := cookieToken(append([]byte(tok), 0)); got != tok {
			t.Fatalf("ASCII cookie %q with NUL gave %q", tok, got)
		}
	})
}

func FuzzParseTunnelAuth(f *testing.F) {
	seedBodies(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ta, err := parseTunnelAuth(b)
		if err != nil {
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("error %v is not ErrBadPacket", err)
			}
			if ta.clientName != "" {
				t.Fatalf("error %v with a client name", err)
			}
			return
		}
		n := int(binary.LittleEndian.Uint16(b[2:]))
		if n%2 != 0 || n > maxResourceNameBytes || len(b) < 4+n {
			t.Fatalf("took a name of %d bytes in a %d-byte packet", n, len(b))
		}
		if !utf8.ValidString(ta.clientName) || strings.HasSuffix(ta.clientName, "\x00") {
			t.Fatalf("client name %q", ta.clientName)
		}
	})
}

func FuzzParseChannelCreate(f *testing.F) {
	seedBodies(f)
	b := []byte{2, 1, 0x3d, 0x0d, 3, 0}
	for _, h := range []string{"a", "b", "c"} {
		b = append(binary.LittleEndian.AppendUint16(b, 4), utf16z(h)...)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		cc, err := parseChannelCreate(b)
		if err != nil {
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("error %v is not ErrBadPacket", err)
			}
			return
		}
		if len(cc.resources) == 0 {
			t.Fatal("no resource and no error: the channel would index an empty slice")
		}
		if len(cc.resources) != int(b[0]) {
			t.Fatalf("%d resources, packet names %d", len(cc.resources), b[0])
		}
		for _, r := range cc.resources {
			if !utf8.ValidString(r) || len(r) > 3*maxResourceNameBytes/2 {
				t.Fatalf("resource %q", r)
			}
		}
		if cc.port != binary.LittleEndian.Uint16(b[2:]) || cc.protocol != binary.LittleEndian.Uint16(b[4:]) {
			t.Fatalf("%+v from % x", cc, b[:6])
		}
		_ = hostOnly(cc.resources[0])
	})
}

func FuzzParseData(f *testing.F) {
	seedBodies(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseData(b)
		if err != nil {
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("error %v is not ErrBadPacket", err)
			}
			return
		}
		n := int(binary.LittleEndian.Uint16(b))
		if len(d) != n || !bytes.Equal(d, b[2:2+n]) {
			t.Fatalf("%d bytes of data, cbLen %d", len(d), n)
		}
		// What the gateway sends back parses the same.
		p := dataPacket(d)
		if int(binary.LittleEndian.Uint32(p[4:])) != len(p) || len(p) != headerLen+2+n {
			t.Fatalf("data packet of %d bytes says %d", len(p), binary.LittleEndian.Uint32(p[4:]))
		}
		if back, err := parseData(p[headerLen:]); err != nil || !bytes.Equal(back, d) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseCloseChannel(f *testing.F) {
	seedBodies(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseCloseChannel(b)
		if (err == nil) != (len(b) >= 4) {
			t.Fatalf("%d bytes: %v", len(b), err)
		}
		if err == nil && s != binary.LittleEndian.Uint32(b) {
			t.Fatalf("status %#x from % x", s, b)
		}
	})
}

// fuzzNow is the fuzz signer's clock: every token it issued is valid.
var fuzzNow = time.Unix(1_800_000_000, 0)

func fuzzSigner() *Signer {
	return &Signer{Key: testKey, Now: func() time.Time { return fuzzNow }}
}

// fuzzToken is a token as the signer issues it, but with a fixed ID: the
// fuzzing workers and the process that feeds them must agree on it, and a
// failing input must fail again when re-run.
func fuzzToken(f *testing.F, user, node string) string {
	f.Helper()
	body, err := json.Marshal(Claims{User: user, Node: node, Issued: fuzzNow.Unix(), Expires: fuzzNow.Add(time.Hour).Unix(), ID: "0123456789abcdef"})
	if err != nil {
		f.Fatal(err)
	}
	tok := signRaw(testKey, body)
	if _, err := fuzzSigner().Verify(tok); err != nil {
		f.Fatalf("the signer refuses a token built as it builds them: %v", err)
	}
	return tok
}

// FuzzVerify: nothing but a token the signer issued verifies, and no
// error quotes its input.
func FuzzVerify(f *testing.F) {
	s := fuzzSigner()
	issued := map[string]bool{}
	for _, u := range []string{"alice", "bob", "c.d@example"} {
		tok := fuzzToken(f, u, "")
		issued[tok] = true
		f.Add(tok)
		f.Add(tok[:len(tok)-1])
		f.Add(tok + "A")
	}
	f.Add("")
	f.Add("pg1.")
	f.Add("pg1..")
	f.Add("pg1.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.Verify(tok)
		if issued[tok] {
			if err != nil {
				t.Fatalf("issued token refused: %v", err)
			}
			return
		}
		if err == nil || !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("a token the signer did not issue: claims %+v, err %v", c, err)
		}
		if len(tok) >= 8 && strings.Contains(err.Error(), tok) {
			t.Fatalf("error %q quotes the token", err)
		}
	})
}

// FuzzVerifyMutated mutates a real token at one place: the result
// verifies only if it is the token itself.
func FuzzVerifyMutated(f *testing.F) {
	s := fuzzSigner()
	tok := fuzzToken(f, "alice", "n1")
	f.Add(uint16(0), byte('x'), uint8(0), "")
	f.Add(uint16(len(tok)-1), byte('B'), uint8(0), "")
	f.Add(uint16(10), byte('A'), uint8(1), "")
	f.Add(uint16(len(tok)), byte(0), uint8(2), ".x")
	f.Fuzz(func(t *testing.T, pos uint16, ch byte, op uint8, tail string) {
		m := []byte(tok)
		i := int(pos) % (len(m) + 1)
		switch op % 4 {
		case 0: // replace
			if i == len(m) {
				i--
			}
			m[i] = ch
		case 1: // insert
			m = append(m[:i], append([]byte{ch}, m[i:]...)...)
		case 2: // cut and append
			m = append(m[:i:i], tail...)
		case 3: // delete
			if i == len(m) {
				i--
			}
			m = append(m[:i], m[i+1:]...)
		}
		got := string(m)
		if got == tok {
			return
		}
		if c, err := s.Verify(got); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("token mutated to %q verified: claims %+v, err %v", got, c, err)
		}
	})
}
