package rdg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// headerOnly serves a packet's header and fails the test if read past it.
type headerOnly struct {
	t   *testing.T
	hdr []byte
}

func (h *headerOnly) Read(p []byte) (int, error) {
	if len(h.hdr) == 0 {
		h.t.Error("readPacket read past the header of a packet it must refuse")
		return 0, errors.New("read past the header")
	}
	n := copy(p, h.hdr)
	h.hdr = h.hdr[n:]
	return n, nil
}

func header(typ uint16, n uint32) []byte {
	h := make([]byte, 8)
	binary.LittleEndian.PutUint16(h, typ)
	binary.LittleEndian.PutUint32(h[4:], n)
	return h
}

func TestBuildersParseBack(t *testing.T) {
	payload := bytes.Repeat([]byte{0xAB}, 300)
	for _, tc := range []struct {
		name    string
		p       []byte
		typ     uint16
		bodyLen int
		status  int // offset of the status in the body, -1 if none
		want    uint32
	}{
		{"handshake ok", handshakeResponse(statusOK, extAuthPAA), pktHandshakeResponse, 10, 0, 0},
		{"handshake refused", handshakeResponse(eProxyCapabilityMismatch, 0), pktHandshakeResponse, 10, 0, eProxyCapabilityMismatch},
		{"tunnel ok", tunnelResponse(statusOK, 1, capIdleTimeout), pktTunnelResponse, 18, 2, 0},
		{"tunnel refused", tunnelResponse(eProxyCookieAuthenticationDenied, 0, 0), pktTunnelResponse, 10, 2, eProxyCookieAuthenticationDenied},
		{"tunnel auth ok", tunnelAuthResponse(statusOK, redirEnableAll, 5), pktTunnelAuthResponse, 16, 0, 0},
		{"tunnel auth refused", tunnelAuthResponse(0x80070005, 0, 0), pktTunnelAuthResponse, 8, 0, 0x80070005},
		{"channel ok", channelResponse(statusOK, 1), pktChannelResponse, 12, 0, 0},
		{"channel refused", channelResponse(eProxyRAPAccessDenied, 0), pktChannelResponse, 8, 0, eProxyRAPAccessDenied},
		{"data", dataPacket(payload), pktData, 2 + len(payload), -1, 0},
		{"empty data", dataPacket(nil), pktData, 2, -1, 0},
		{"close channel", closeChannel(statusOK), pktCloseChannel, 4, 0, 0},
		{"close channel response", closeChannelResponse(statusOK), pktCloseChannelResponse, 4, 0, 0},
		{"keepalive", keepalive(), pktKeepalive, 0, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := binary.LittleEndian.Uint32(tc.p[4:]); int(got) != len(tc.p) {
				t.Fatalf("length field %d, packet is %d bytes", got, len(tc.p))
			}
			if r := binary.LittleEndian.Uint16(tc.p[2:]); r != 0 {
				t.Fatalf("reserved header field %#x", r)
			}
			rd := bytes.NewReader(append(append([]byte{}, tc.p...), 0xFF)) // a byte of the next packet
			p, err := readPacket(rd, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if p.typ != tc.typ || len(p.body) != tc.bodyLen {
				t.Fatalf("type %#x body %d bytes, want %#x and %d", p.typ, len(p.body), tc.typ, tc.bodyLen)
			}
			if rd.Len() != 1 {
				t.Fatalf("readPacket left %d bytes of the next packet, want 1", rd.Len())
			}
			if tc.status >= 0 {
				if s := binary.LittleEndian.Uint32(p.body[tc.status:]); s != tc.want {
					t.Fatalf("status %#x, want %#x", s, tc.want)
				}
			}
		})
	}
	d, err := parseData(dataPacket(payload)[headerLen:])
	if err != nil || !bytes.Equal(d, payload) {
		t.Fatalf("data packet parsed back %d bytes, %v", len(d), err)
	}
	// The tunnel response's optional fields, in order (spec §4).
	b := tunnelResponse(statusOK, 7, capIdleTimeout)[headerLen:]
	if f := binary.LittleEndian.Uint16(b[6:]); f != tunnelResponseTunnelID|tunnelResponseCaps {
		t.Fatalf("tunnel response fields %#x", f)
	}
	if id, caps := binary.LittleEndian.Uint32(b[10:]), binary.LittleEndian.Uint32(b[14:]); id != 7 || caps != capIdleTimeout {
		t.Fatalf("tunnel id %d caps %#x", id, caps)
	}
	b = channelResponse(statusOK, 1)[headerLen:]
	if f, id := binary.LittleEndian.Uint16(b[4:]), binary.LittleEndian.Uint32(b[8:]); f != channelResponseChannelID || id != 1 {
		t.Fatalf("channel response fields %#x channel id %d, want 1 and 1", f, id)
	}
	// A refusal never promises a field it does not carry.
	for _, p := range [][]byte{tunnelResponse(eProxyCookieAuthenticationDenied, 0, 0), tunnelAuthResponse(0x80070005, 0, 0), channelResponse(eProxyRAPAccessDenied, 0)} {
		if f := binary.LittleEndian.Uint16(p[len(p)-4:]); f != 0 {
			t.Errorf("refusal of type %#x flags fields %#x", binary.LittleEndian.Uint16(p), f)
		}
	}
}

func TestReadPacketBounds(t *testing.T) {
	t.Run("longer than max refused before the body", func(t *testing.T) {
		for _, n := range []uint32{101, 1 << 20, 0xFFFFFFFF} {
			_, err := readPacket(&headerOnly{t: t, hdr: header(pktData, n)}, 100)
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("length %d over max 100: %v, want ErrBadPacket", n, err)
			}
		}
	})
	t.Run("exactly max taken", func(t *testing.T) {
		p := append(header(pktData, 100), make([]byte, 92)...)
		got, err := readPacket(bytes.NewReader(p), 100)
		if err != nil || len(got.body) != 92 {
			t.Fatalf("%d-byte body, %v", len(got.body), err)
		}
	})
	t.Run("length shorter than the header refused", func(t *testing.T) {
		for n := uint32(0); n < headerLen; n++ {
			_, err := readPacket(&headerOnly{t: t, hdr: header(pktData, n)}, 100)
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("length %d: %v, want ErrBadPacket", n, err)
			}
		}
	})
	t.Run("header alone", func(t *testing.T) {
		got, err := readPacket(bytes.NewReader(header(pktKeepalive, 8)), 100)
		if err != nil || got.typ != pktKeepalive || len(got.body) != 0 {
			t.Fatalf("%+v, %v", got, err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		if _, err := readPacket(bytes.NewReader(nil), 100); err != io.EOF {
			t.Fatalf("nothing: %v, want io.EOF (a client that left)", err)
		}
		if _, err := readPacket(bytes.NewReader([]byte{1, 0, 0}), 100); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("half a header: %v", err)
		}
		p := append(header(pktData, 20), 1, 2)
		if _, err := readPacket(bytes.NewReader(p), 100); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("half a body: %v", err)
		}
	})
}

// freerdpHandshake is the handshake request FreeRDP 2.11 sends with /gat
// (spec §4).
var freerdpHandshake = []byte{0x01, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00}

func TestParseFreeRDPPackets(t *testing.T) {
	p, err := readPacket(bytes.NewReader(freerdpHandshake), maxPreAuthPacket)
	if err != nil || p.typ != pktHandshakeRequest {
		t.Fatalf("%+v %v", p, err)
	}
	h, err := parseHandshakeRequest(p.body)
	if err != nil || h.major != 1 || h.minor != 0 || h.extendedAuth != extAuthPAA {
		t.Fatalf("%+v %v", h, err)
	}
	if _, err := parseHandshakeRequest(p.body[:5]); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("short handshake: %v", err)
	}

	tc, err := parseTunnelCreate(tunnelCreateReq("tok")[headerLen:])
	if err != nil || tc.caps != 0x0D || tc.fields != tunnelCreatePAACookie {
		t.Fatalf("%+v %v", tc, err)
	}
	if !bytes.Equal(tc.paaCookie, []byte{0x74, 0, 0x6f, 0, 0x6b, 0, 0, 0}) {
		t.Fatalf("cookie % x", tc.paaCookie)
	}
	if got := cookieToken(tc.paaCookie); got != "tok" {
		t.Fatalf("cookieToken = %q, want tok", got)
	}
	// Without the PAA field there is no cookie.
	tc, err = parseTunnelCreate([]byte{0x0D, 0, 0, 0, 0, 0, 0, 0})
	if err != nil || tc.paaCookie != nil {
		t.Fatalf("%+v %v", tc, err)
	}
	// A cookie longer than the packet is refused.
	if _, err := parseTunnelCreate([]byte{0x0D, 0, 0, 0, 1, 0, 0, 0, 10, 0, 't', 0}); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("truncated cookie: %v", err)
	}
	long := binary.LittleEndian.AppendUint16([]byte{0x0D, 0, 0, 0, 1, 0, 0, 0}, maxCookie+2)
	if _, err := parseTunnelCreate(append(long, make([]byte, maxCookie+2)...)); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("cookie over %d bytes: %v", maxCookie, err)
	}

	ta, err := parseTunnelAuth(tunnelAuthReq("vm")[headerLen:])
	if err != nil || ta.clientName != "vm" {
		t.Fatalf("%+v %v", ta, err)
	}

	cc, err := parseChannelCreate(channelCreateReq("pool", 3389)[headerLen:])
	if err != nil || len(cc.resources) != 1 || cc.resources[0] != "pool" || cc.port != 3389 || cc.protocol != protocolRDP {
		t.Fatalf("%+v %v", cc, err)
	}
	// Alternative resources are read past, not taken as resources.
	b := []byte{1, 1, 0x3d, 0x0d, 3, 0}
	b = append(binary.LittleEndian.AppendUint16(b, 6), utf16z("ab")...)
	b = append(binary.LittleEndian.AppendUint16(b, 6), utf16z("cd")...)
	cc, err = parseChannelCreate(b)
	if err != nil || len(cc.resources) != 1 || cc.resources[0] != "ab" {
		t.Fatalf("%+v %v", cc, err)
	}
	if _, err := parseChannelCreate([]byte{0, 0, 0x3d, 0x0d, 3, 0}); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("no resource: %v", err)
	}

	d, err := parseData(dataReq([]byte("abc"))[headerLen:])
	if err != nil || string(d) != "abc" {
		t.Fatalf("%q %v", d, err)
	}
	if _, err := parseData([]byte{5, 0, 1, 2}); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("data shorter than its cbLen: %v", err)
	}
	s, err := parseCloseChannel([]byte{1, 0, 0, 0x80})
	if err != nil || s != 0x80000001 {
		t.Fatalf("%#x %v", s, err)
	}
	if _, err := parseCloseChannel([]byte{1, 0}); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("short close: %v", err)
	}
}

func TestStringBounds(t *testing.T) {
	name := func(cb uint16, b []byte) []byte {
		return append(binary.LittleEndian.AppendUint16([]byte{0, 0}, cb), b...)
	}
	if _, err := parseTunnelAuth(name(3, []byte{'v', 0, 'm', 0})); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("odd byte length: %v", err)
	}
	big := utf16z(strings.Repeat("h", maxResourceNameBytes/2))
	if _, err := parseTunnelAuth(name(uint16(len(big)), big)); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("client name of %d bytes: %v", len(big), err)
	}
	ok := []byte(strings.Repeat("h\x00", maxResourceNameBytes/2))
	if ta, err := parseTunnelAuth(name(uint16(len(ok)), ok)); err != nil || len(ta.clientName) != maxResourceNameBytes/2 {
		t.Fatalf("name of exactly %d bytes: %d chars, %v", maxResourceNameBytes, len(ta.clientName), err)
	}
	cc := func(cb uint16, b []byte) []byte {
		return append(binary.LittleEndian.AppendUint16([]byte{1, 0, 0x3d, 0x0d, 3, 0}, cb), b...)
	}
	if _, err := parseChannelCreate(cc(uint16(len(big)), big)); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("resource name of %d bytes: %v", len(big), err)
	}
	if _, err := parseChannelCreate(cc(5, []byte("p\x00o\x00o"))); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("odd resource name length: %v", err)
	}
	if _, err := parseChannelCreate(cc(10, []byte("p\x00"))); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("resource name longer than the packet: %v", err)
	}
}

func TestCookieToken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cookie []byte
		want   string
	}{
		{"utf-16 with NUL", utf16z("pg1.abc.def"), "pg1.abc.def"},
		{"utf-16 without NUL", utf16z("pg1.abc.def")[:22], "pg1.abc.def"},
		{"ascii", []byte("pg1.abc.def"), "pg1.abc.def"},
		{"ascii with NUL", []byte("pg1.abc.def\x00"), "pg1.abc.def"},
		{"ascii even length", []byte("pg1.ab"), "pg1.ab"},
		{"non-ascii utf-16", utf16z("héllo"), "héllo"},
		{"empty", nil, ""},
		{"NUL only", []byte{0, 0}, ""},
	} {
		if got := cookieToken(tc.cookie); got != tc.want {
			t.Errorf("%s: cookieToken(% x) = %q, want %q", tc.name, tc.cookie, got, tc.want)
		}
	}
}
