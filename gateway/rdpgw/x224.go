package rdpgw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/poolgate/poolgate/internal/username"
)

// Sizes of the fixed parts of a client's first packet ([MS-RDPBCGR]
// 2.2.1.1: a TPKT header, then an X.224 Connection Request TPDU).
const (
	tpktHeaderLen = 4
	x224CRLen     = 7 // LI, CR code, DST-REF, SRC-REF, class
	minPacketLen  = tpktHeaderLen + x224CRLen
	// mstscCookieMax is how many characters of the user name mstsc puts
	// in its mstshash cookie: a cookie this long may be cut short.
	mstscCookieMax = 9
)

// ErrNotRDP means the first packet is not a TPKT-framed X.224
// Connection Request.
var ErrNotRDP = errors.New("not an RDP connection request")

// ConnectionRequest is what the gateway reads from a client's first
// packet. Raw is the packet itself, replayed to the node unchanged.
type ConnectionRequest struct {
	Raw []byte
	// Cookie is the mstshash value as sent ("" when absent): the user
	// name the client claims, possibly DOMAIN\user, user@domain or cut
	// short.
	Cookie string
	// RoutingToken is the value of a "Cookie: msts=" routing token a
	// session broker gave the client ("" when absent).
	RoutingToken string
	// Protocols are the security protocols of the RDP Negotiation
	// Request (PROTOCOL_SSL 1, PROTOCOL_HYBRID 2, ...); HasNegReq is false
	// when the packet has none (legacy RDP security).
	Protocols uint32
	HasNegReq bool
}

// User is the login name the cookie claims, in canonical form
// (internal/username: "ALICE" is alice, as Windows compares names): a
// domain before a backslash or after an @ is dropped (nodes of one pool
// share their domain), and "" means no usable name. Truncated reports
// that the name may have been cut short by the client (mstsc sends at
// most 9 characters).
func (cr ConnectionRequest) User() (user string, truncated bool) {
	u := cr.Cookie
	domain := false
	if i := strings.LastIndexByte(u, '\\'); i >= 0 {
		u, domain = u[i+1:], true
	}
	if i := strings.IndexByte(u, '@'); i >= 0 {
		u, domain = u[:i], true
	}
	u, err := username.Canonical(u)
	if err != nil {
		return "", false // not a user name of the pool
	}
	// A cookie of mstsc's length may be a name cut short, but only a
	// cookie that is the name alone: "CORP\\a" cut from CORP\\alice says
	// nothing about which names start with "a".
	return u, !domain && len(cr.Cookie) == mstscCookieMax
}

// ReadConnectionRequest reads the client's first packet from r: a TPKT
// header and as many bytes as it announces, at most max in all, and
// parses it. It reads nothing beyond the packet.
func ReadConnectionRequest(r io.Reader, max int) (ConnectionRequest, error) {
	var hdr [tpktHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return ConnectionRequest{}, fmt.Errorf("reading the first packet: %w", err)
	}
	if hdr[0] != 3 || hdr[1] != 0 {
		return ConnectionRequest{}, fmt.Errorf("%w: no TPKT header (first bytes %#x %#x)", ErrNotRDP, hdr[0], hdr[1])
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	if n < minPacketLen {
		return ConnectionRequest{}, fmt.Errorf("%w: TPKT length %d is too short", ErrNotRDP, n)
	}
	if n > max {
		return ConnectionRequest{}, fmt.Errorf("%w: first packet of %d bytes is larger than %d", ErrNotRDP, n, max)
	}
	buf := make([]byte, n)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[tpktHeaderLen:]); err != nil {
		return ConnectionRequest{}, fmt.Errorf("reading the first packet: %w", err)
	}
	return ParseConnectionRequest(buf)
}

// ParseConnectionRequest parses one whole first packet.
func ParseConnectionRequest(b []byte) (ConnectionRequest, error) {
	if len(b) < minPacketLen || b[0] != 3 || b[1] != 0 {
		return ConnectionRequest{}, fmt.Errorf("%w: no TPKT header", ErrNotRDP)
	}
	if n := int(binary.BigEndian.Uint16(b[2:])); n != len(b) {
		return ConnectionRequest{}, fmt.Errorf("%w: TPKT length %d, packet %d bytes", ErrNotRDP, n, len(b))
	}
	// The length indicator counts the TPDU's bytes after itself.
	if li := int(b[4]); li != len(b)-tpktHeaderLen-1 {
		return ConnectionRequest{}, fmt.Errorf("%w: X.224 length %d does not match the packet", ErrNotRDP, li)
	}
	if b[5] != 0xe0 {
		return ConnectionRequest{}, fmt.Errorf("%w: X.224 TPDU %#x is not a Connection Request", ErrNotRDP, b[5])
	}
	cr := ConnectionRequest{Raw: b}
	rest := b[minPacketLen:]
	// routingToken or cookie: an ANSI string ended by CR LF.
	if bytes.HasPrefix(rest, []byte("Cookie: ")) {
		end := bytes.Index(rest, []byte("\r\n"))
		if end < 0 {
			return ConnectionRequest{}, fmt.Errorf("%w: cookie without CR LF", ErrNotRDP)
		}
		line := string(rest[len("Cookie: "):end])
		rest = rest[end+2:]
		switch {
		case strings.HasPrefix(line, "mstshash="):
			cr.Cookie = strings.TrimPrefix(line, "mstshash=")
		case strings.HasPrefix(line, "msts="):
			cr.RoutingToken = strings.TrimPrefix(line, "msts=")
		}
	}
	// RDP Negotiation Request: type 1, flags, length 8, protocols.
	if len(rest) >= 8 && rest[0] == 0x01 {
		if l := binary.LittleEndian.Uint16(rest[2:]); l != 8 {
			return ConnectionRequest{}, fmt.Errorf("%w: negotiation request length %d, want 8", ErrNotRDP, l)
		}
		cr.HasNegReq = true
		cr.Protocols = binary.LittleEndian.Uint32(rest[4:])
	}
	return cr, nil
}

// BuildConnectionRequest returns a first packet carrying the given
// cookie line ("" for none; e.g. "Cookie: mstshash=alice") and a
// negotiation request for protocols, as clients send it. The health
// probe and the tests use it.
func BuildConnectionRequest(cookie string, protocols uint32) []byte {
	var body []byte
	if cookie != "" {
		body = append(body, cookie...)
		body = append(body, '\r', '\n')
	}
	body = append(body, 0x01, 0x00, 0x08, 0x00)
	body = binary.LittleEndian.AppendUint32(body, protocols)
	n := minPacketLen + len(body)
	b := make([]byte, 0, n)
	b = append(b, 3, 0, byte(n>>8), byte(n), byte(n-tpktHeaderLen-1), 0xe0, 0, 0, 0, 0, 0)
	return append(b, body...)
}

// IsConnectionConfirm reports whether b starts with a TPKT-framed X.224
// Connection Confirm (the node's answer to a Connection Request), given
// at least minPacketLen bytes.
func IsConnectionConfirm(b []byte) bool {
	return len(b) >= minPacketLen && b[0] == 3 && b[1] == 0 && b[5]&0xf0 == 0xd0
}
