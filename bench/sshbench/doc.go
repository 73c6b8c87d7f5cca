// Command sshbench measures the SSH gateway side by side with direct SSH on
// one machine: throughput (cat and scp) per cipher with the gateway's CPU
// time, login latency, the gateway's memory and goroutines per idle
// session, and the cost of session recording on a PTY session's output
// (recording off and on, alternating). It needs root (it runs sshd and adds the user pgbench) and the
// Debian packages openssh-server and openssh-client. Run it from the
// repository root:
//
//	go run ./bench/sshbench            # everything
//	go run ./bench/sshbench -only idle # one part: throughput, setup, idle or recording
//
// It prints a Markdown report; docs/PERFORMANCE.md holds the latest.
package main
