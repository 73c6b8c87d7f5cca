package rdg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
)

// Packet types ([MS-TSGU] 2.2.5.3.x, HTTP transport).
const (
	pktHandshakeRequest     = 0x01
	pktHandshakeResponse    = 0x02
	pktExtendedAuth         = 0x03
	pktTunnelCreate         = 0x04
	pktTunnelResponse       = 0x05
	pktTunnelAuth           = 0x06
	pktTunnelAuthResponse   = 0x07
	pktChannelCreate        = 0x08
	pktChannelResponse      = 0x09
	pktData                 = 0x0A
	pktServiceMessage       = 0x0B
	pktReauth               = 0x0C
	pktKeepalive            = 0x0D
	pktCloseChannel         = 0x10
	pktCloseChannelResponse = 0x11
)

// Fields and flags.
const (
	extAuthPAA = 0x02 // HTTP_EXTENDED_AUTH_PAA: the client sends a token

	tunnelCreatePAACookie = 0x01 // HTTP_TUNNEL_PACKET_FIELD_PAA_COOKIE

	tunnelResponseTunnelID = 0x01 // HTTP_TUNNEL_RESPONSE_FIELD_TUNNEL_ID
	tunnelResponseCaps     = 0x02 // HTTP_TUNNEL_RESPONSE_FIELD_CAPS

	tunnelAuthResponseRedirFlags  = 0x01 // HTTP_TUNNEL_AUTH_RESPONSE_FIELD_REDIR_FLAGS
	tunnelAuthResponseIdleTimeout = 0x02 // HTTP_TUNNEL_AUTH_RESPONSE_FIELD_IDLE_TIMEOUT

	channelResponseChannelID = 0x01 // HTTP_CHANNEL_RESPONSE_FIELD_CHANNELID

	capQuarantineSOH     = 0x02 // HTTP_CAPABILITY_TYPE_QUAR_SOH
	capIdleTimeout       = 0x04 // HTTP_CAPABILITY_IDLE_TIMEOUT
	capMessagingConsent  = 0x08 // HTTP_CAPABILITY_MESSAGING_CONSENT_SIGN
	capMessagingService  = 0x10 // HTTP_CAPABILITY_MESSAGING_SERVICE_MSG
	capReauth            = 0x20 // HTTP_CAPABILITY_REAUTH
	capUDPTransport      = 0x40 // HTTP_CAPABILITY_UDP_TRANSPORT
	redirDisableAll      = 0x40000000
	redirEnableAll       = 0x80000000
	redirDisableDrive    = 0x01
	redirDisablePrinter  = 0x02
	redirDisablePort     = 0x04
	redirDisableClipbrd  = 0x08
	redirDisablePnP      = 0x10
	protocolRDP          = 3 // channel create: the resource speaks RDP
	headerLen            = 8
	maxResourceNameBytes = 512 // a host name, UTF-16: 255 characters and more
)

// HRESULTs the gateway answers with ([MS-TSGU] 2.2.6 and 2.2.8).
const (
	statusOK                          = 0
	eProxyInternalError               = 0x800759D8
	eProxyRAPAccessDenied             = 0x800759DA // the target is not one the user may reach
	eProxyNAPAccessDenied             = 0x800759DB // the user may not use the gateway
	eProxyTSConnectFailed             = 0x800759DD // the node did not take the connection
	eProxyCookieBadPacket             = 0x800759F7
	eProxyCookieAuthenticationDenied  = 0x800759F8 // the token is not good
	eProxyCapabilityMismatch          = 0x800759E9
	eProxyMaxConnectionsReached       = 0x800759E2
	hrErrorGrpcOrUnsupported          = 0x80070032 // ERROR_NOT_SUPPORTED: a version we do not speak
	eProxyNotSupported                = 0x800759E8
	eProxySessionTimeout              = 0x800759F6
	eProxyConnectionAborted           = 0x800759E0
	eProxyReauthAuthnFailed           = 0x80075999
	eProxyTSConnectFailedWrongChannel = eProxyRAPAccessDenied
)

// ErrBadPacket wraps every malformed packet a client sends.
var ErrBadPacket = errors.New("malformed RD Gateway packet")

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadPacket, fmt.Sprintf(format, args...))
}

// packet is one packet as read: its type and the bytes after the header.
type packet struct {
	typ  uint16
	body []byte
}

// readPacket reads one packet of at most max bytes (header included).
func readPacket(r io.Reader, max int) (packet, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return packet{}, err
	}
	typ := binary.LittleEndian.Uint16(hdr[0:])
	n := binary.LittleEndian.Uint32(hdr[4:])
	if n < headerLen {
		return packet{}, bad("packet length %d is shorter than its header", n)
	}
	if n > uint32(max) {
		return packet{}, bad("packet of type %#x is %d bytes, more than %d", typ, n, max)
	}
	body := make([]byte, n-headerLen)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return packet{}, err
	}
	return packet{typ: typ, body: body}, nil
}

// reader takes little-endian fields off a packet's body.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = bad("%s: %d bytes wanted, %d left", what, n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) uint8 {
	if b := r.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(what string) uint16 {
	if b := r.take(2, what); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if b := r.take(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// utf16String reads a UTF-16LE string of cb bytes, dropping a final NUL.
func (r *reader) utf16String(cb int, max int, what string) string {
	if cb > max {
		if r.err == nil {
			r.err = bad("%s of %d bytes is longer than %d", what, cb, max)
		}
		return ""
	}
	if cb%2 != 0 {
		if r.err == nil {
			r.err = bad("%s has an odd length %d", what, cb)
		}
		return ""
	}
	b := r.take(cb, what)
	if b == nil {
		return ""
	}
	u := make([]uint16, 0, cb/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, binary.LittleEndian.Uint16(b[i:]))
	}
	for len(u) > 0 && u[len(u)-1] == 0 {
		u = u[:len(u)-1]
	}
	return string(utf16.Decode(u))
}

// handshakeRequest is HTTP_HANDSHAKE_REQUEST_PACKET.
type handshakeRequest struct {
	major, minor  uint8
	clientVersion uint16
	extendedAuth  uint16
}

func parseHandshakeRequest(b []byte) (handshakeRequest, error) {
	r := &reader{b: b}
	h := handshakeRequest{major: r.u8("version major"), minor: r.u8("version minor"), clientVersion: r.u16("client version"), extendedAuth: r.u16("extended auth")}
	return h, r.err
}

// tunnelCreate is HTTP_TUNNEL_PACKET: the client's capabilities and its
// PAA cookie (the token), as the client sent it.
type tunnelCreate struct {
	caps      uint32
	fields    uint16
	paaCookie []byte
}

// maxCookie bounds the PAA cookie: a token is a few hundred bytes.
const maxCookie = 8 << 10

func parseTunnelCreate(b []byte) (tunnelCreate, error) {
	r := &reader{b: b}
	t := tunnelCreate{caps: r.u32("capabilities"), fields: r.u16("fields present")}
	r.u16("reserved")
	if r.err == nil && t.fields&tunnelCreatePAACookie != 0 {
		n := int(r.u16("PAA cookie length"))
		if n > maxCookie {
			return t, bad("PAA cookie of %d bytes is longer than %d", n, maxCookie)
		}
		t.paaCookie = r.take(n, "PAA cookie")
	}
	return t, r.err
}

// cookieToken is the token in a PAA cookie: FreeRDP sends the .rdp
// file's gatewayaccesstoken as UTF-16LE with a final NUL; plain ASCII
// (as some clients send it) is taken too.
func cookieToken(c []byte) string {
	if len(c) >= 2 && len(c)%2 == 0 && c[1] == 0 {
		r := &reader{b: c}
		return r.utf16String(len(c), maxCookie, "PAA cookie")
	}
	for len(c) > 0 && c[len(c)-1] == 0 {
		c = c[:len(c)-1]
	}
	return string(c)
}

// tunnelAuth is HTTP_TUNNEL_AUTH_PACKET.
type tunnelAuth struct {
	fields     uint16
	clientName string
}

func parseTunnelAuth(b []byte) (tunnelAuth, error) {
	r := &reader{b: b}
	t := tunnelAuth{fields: r.u16("fields present")}
	n := int(r.u16("client name length"))
	t.clientName = r.utf16String(n, maxResourceNameBytes, "client name")
	return t, r.err
}

// channelCreate is HTTP_CHANNEL_PACKET: the resources (host names) the
// client asks to reach, on port.
type channelCreate struct {
	resources []string
	port      uint16
	protocol  uint16
}

func parseChannelCreate(b []byte) (channelCreate, error) {
	r := &reader{b: b}
	nRes, nAlt := r.u8("resource count"), r.u8("alternative resource count")
	c := channelCreate{port: r.u16("port"), protocol: r.u16("protocol")}
	if r.err == nil && nRes == 0 {
		return c, bad("channel create names no resource")
	}
	for i := 0; i < int(nRes)+int(nAlt) && r.err == nil; i++ {
		n := int(r.u16("resource name length"))
		name := r.utf16String(n, maxResourceNameBytes, "resource name")
		if r.err == nil && i < int(nRes) {
			c.resources = append(c.resources, name)
		}
	}
	return c, r.err
}

// parseData is HTTP_DATA_PACKET: the bytes it carries.
func parseData(b []byte) ([]byte, error) {
	r := &reader{b: b}
	n := int(r.u16("data length"))
	d := r.take(n, "data")
	return d, r.err
}

// parseCloseChannel is HTTP_CLOSE_PACKET: the status the client closes with.
func parseCloseChannel(b []byte) (uint32, error) {
	r := &reader{b: b}
	s := r.u32("status")
	return s, r.err
}

// writer builds a packet.
type writer struct{ b []byte }

func newPacket(typ uint16) *writer {
	w := &writer{b: make([]byte, headerLen, 64)}
	binary.LittleEndian.PutUint16(w.b, typ)
	return w
}

func (w *writer) u8(v uint8) *writer   { w.b = append(w.b, v); return w }
func (w *writer) u16(v uint16) *writer { w.b = binary.LittleEndian.AppendUint16(w.b, v); return w }
func (w *writer) u32(v uint32) *writer { w.b = binary.LittleEndian.AppendUint32(w.b, v); return w }
func (w *writer) bytes(v []byte) *writer {
	w.b = append(w.b, v...)
	return w
}

// done sets the length and returns the packet.
func (w *writer) done() []byte {
	binary.LittleEndian.PutUint32(w.b[4:], uint32(len(w.b)))
	return w.b
}

func handshakeResponse(status uint32, extAuth uint16) []byte {
	return newPacket(pktHandshakeResponse).u32(status).u8(1).u8(0).u16(0).u16(extAuth).done()
}

func tunnelResponse(status, tunnelID, caps uint32) []byte {
	w := newPacket(pktTunnelResponse).u16(0).u32(status)
	if status != statusOK {
		return w.u16(0).u16(0).done()
	}
	return w.u16(tunnelResponseTunnelID | tunnelResponseCaps).u16(0).u32(tunnelID).u32(caps).done()
}

func tunnelAuthResponse(status, redirFlags, idleMinutes uint32) []byte {
	w := newPacket(pktTunnelAuthResponse).u32(status)
	if status != statusOK {
		return w.u16(0).u16(0).done()
	}
	return w.u16(tunnelAuthResponseRedirFlags | tunnelAuthResponseIdleTimeout).u16(0).u32(redirFlags).u32(idleMinutes).done()
}

func channelResponse(status, channelID uint32) []byte {
	w := newPacket(pktChannelResponse).u32(status)
	if status != statusOK {
		return w.u16(0).u16(0).done()
	}
	return w.u16(channelResponseChannelID).u16(0).u32(channelID).done()
}

// dataPacket wraps p (at most 65535 bytes) in a data packet.
func dataPacket(p []byte) []byte {
	return newPacket(pktData).u16(uint16(len(p))).bytes(p).done()
}

func closeChannelResponse(status uint32) []byte {
	return newPacket(pktCloseChannelResponse).u32(status).done()
}

func closeChannel(status uint32) []byte {
	return newPacket(pktCloseChannel).u32(status).done()
}

func keepalive() []byte { return newPacket(pktKeepalive).done() }
