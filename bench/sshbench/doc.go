// Command sshbench measures the SSH gateway side by side with direct SSH on
// one machine: throughput (cat and scp) per cipher with the gateway's CPU
// time, login latency, and the gateway's memory and goroutines per idle
// session. It needs root (it runs sshd and adds the user pgbench) and the
// Debian packages openssh-server and openssh-client. Run it from the
// repository root:
//
//	go run ./bench/sshbench            # everything
//	go run ./bench/sshbench -only idle # one part: throughput, setup or idle
//
// It prints a Markdown report; docs/PERFORMANCE.md holds the latest.
package main
