// Command httpbench measures the HTTP gateway side by side with HAProxy
// and with direct requests to one backend, on one machine, against the
// same three backends: wrk's requests per second and p99 latency at two
// concurrencies, and the gateway's memory per open WebSocket. It needs the
// Debian packages wrk and haproxy. Run it from the repository root:
//
//	go run ./bench/httpbench
//	go run ./bench/httpbench -duration 20s -conns 64,512 -websockets 1000
//
// It prints a Markdown report; docs/PERFORMANCE.md holds the latest.
package main
