package discovery

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"

	"github.com/poolgate/poolgate/balancer"
)

// NewRDPChecker returns a checker of the nodes' RDP servers: it probes
// only nodes with an RDP address and reports to to (the balancer) for
// balancer.RDP. Its probe results are
// poolgate_health_checks_total{check="rdp"}.
func NewRDPChecker(cfg HealthConfig, to StatusSetter, opts CheckerOptions) *Checker {
	if opts.Probe == nil {
		opts.Probe = RDPProbe(&net.Dialer{})
	}
	return newChecker(cfg, to, opts, balancer.RDP)
}

// rdpProbeRequest is an X.224 Connection Request without a cookie that
// asks for TLS or CredSSP ([MS-RDPBCGR] 2.2.1.1), as a client's first
// packet: TPKT header, CR TPDU, RDP Negotiation Request.
var rdpProbeRequest = []byte{
	3, 0, 0, 19, // TPKT: version 3, length 19
	14, 0xe0, 0, 0, 0, 0, 0, // X.224: LI 14, CR, DST-REF, SRC-REF, class 0
	1, 0, 8, 0, 3, 0, 0, 0, // RDP_NEG_REQ: PROTOCOL_SSL | PROTOCOL_HYBRID
}

// RDPProbe connects to the node's RDP server, sends a Connection Request
// and wants an X.224 Connection Confirm back, which proves the server
// accepts connections, not just that the port is open. A negotiation
// failure in the confirm (the server wants other security) still counts
// as up: the server answered. It then hangs up, before any TLS.
func RDPProbe(dialer *net.Dialer) Probe {
	return func(ctx context.Context, n balancer.Node) error {
		conn, err := dialer.DialContext(ctx, "tcp", n.RDP)
		if err != nil {
			return err
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		if _, err := conn.Write(rdpProbeRequest); err != nil {
			return fmt.Errorf("sending the connection request: %w", err)
		}
		return ReadConnectionConfirm(conn)
	}
}

// ReadConnectionConfirm reads one TPKT packet of at most 1 KiB from r
// and checks that it is an X.224 Connection Confirm.
func ReadConnectionConfirm(r io.Reader) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("no connection confirm: %w", err)
	}
	if hdr[0] != 3 || hdr[1] != 0 {
		return fmt.Errorf("no connection confirm: not a TPKT packet (first bytes %#x %#x)", hdr[0], hdr[1])
	}
	size := int(binary.BigEndian.Uint16(hdr[2:]))
	if size < 11 || size > 1024 {
		return fmt.Errorf("no connection confirm: TPKT length %d", size)
	}
	body := make([]byte, size-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return fmt.Errorf("no connection confirm: %w", err)
	}
	if body[1]&0xf0 != 0xd0 {
		return fmt.Errorf("no connection confirm: X.224 TPDU %#x", body[1])
	}
	return nil
}
