// Package rdpgw is poolgate's RDP front end, for pools of Windows nodes
// (or Linux nodes running xrdp). It reads the client's first packet (a
// TPKT-framed X.224 Connection Request), takes the user name it claims
// from its routing cookie, picks the node, replays that packet to the
// node unchanged and relays bytes both ways. TLS and CredSSP (NLA) stay
// end to end between client and node: the gateway never sees a password
// or a decrypted byte.
//
// # The cookie
//
// [MS-RDPBCGR] 2.2.1.1: the Connection Request may carry, after its fixed
// part, either a routing token ("Cookie: msts=…", set by a session broker
// that redirected the client) or a cookie "Cookie: mstshash=IDENTIFIER",
// each ended by CR LF, then an RDP Negotiation Request. mstsc fills the
// identifier with the user name as typed, cut to 9 characters; FreeRDP
// with its user name (the part after DOMAIN\ when /u names a domain; with
// an RD Gateway it sends DOMAIN\user instead), and sends no cookie when it
// has no user name. So the gateway drops a DOMAIN\ or @domain part, and
// treats a 9-character name as possibly cut short: if no user has exactly
// that name, the one pinned user whose name starts with it is taken
// (balancer.PinnedUser). The name is taken in canonical form
// (internal/username: ASCII lower case, as Windows compares names), so
// "ALICE" is the user alice of the SSH and HTTP front ends. A connection
// without a usable name (one the rule refuses), or with a routing token
// instead, goes to the least-loaded node and never counts.
//
// # Claimed until proven
//
// The name in the cookie is a claim anyone can type. A connection is
// routed by it (to the claimed user's pinned node, else the least-loaded
// one, through Balancer.Route: no lease, no pin) and takes a lease, and so
// a pin and a count, only once the node has kept it past authentication.
// The signal (Config.ProofTime, ProofBytes) is: the connection is still
// open proof_time (3 s) after the Connection Request went to the node,
// the client has sent more than that packet (its TLS handshake at least),
// and the node has sent at least proof_bytes (16 KiB) since. Then
// Balancer.AcquireOn takes the lease on the node the connection is
// already on. (Bytes from the client after proof_time are not required:
// a client at an idle desktop or a logon screen may send none for long.)
//
// Why that is enough: before authentication a node sends little — its
// Connection Confirm, its TLS handshake flight (certificate included,
// a few KiB) and, with NLA, one CredSSP challenge — and with NLA it sends
// nothing more until the client proves its credentials: a failed CredSSP
// exchange is closed by the node at once, and a client that stalls gets
// no more bytes. After authentication the node sends the session's
// licensing, capabilities and the first screen, tens of KiB or more,
// within a second or two, and keeps talking while the client does. A
// forged cookie that never completes the handshake therefore never
// reaches proof_bytes and counts nothing; unproven connections are capped
// in all (max_unproven) and per address (max_unproven_per_address, IPv6
// by /64) and closed after proof_timeout. The limit: a node that does not
// require NLA shows its logon screen to anyone, which passes the test;
// pools should require NLA (the Windows default), as xrdp cannot.
//
// The package takes the balancer through the [Balancer] interface it
// declares, imports balancer for its types, internal/username for the
// rule on user names and gateway/gwmetrics for the front ends' shared
// metric families, and never imports discovery.
package rdpgw
