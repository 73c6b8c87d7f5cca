// Package gwmetrics holds the Prometheus families that every front end
// (gateway/sshgw, gateway/httpgw, gateway/rdpgw) records into: one family
// per figure, labelled by protocol, so a dashboard asks one name for SSH,
// HTTP and RDP alike.
//
//	poolgate_pick_duration_seconds{protocol}           histogram
//	poolgate_relayed_bytes_total{protocol,direction}   direction to_node, to_client
//	poolgate_login_refusals_total{protocol,reason}     availability, not credentials
//	poolgate_auth_failures_total{method,reason}        credentials only (SSH)
//	poolgate_http_requests_total{code}                 HTTP front end answers
//
// cmd creates one [Set] per gateway and hands each front end the [Front]
// of its protocol. A nil *Front records nothing, so a front end built
// without metrics (tests) needs no checks.
//
// It imports only balancer (for the protocol names) and client_golang.
package gwmetrics
