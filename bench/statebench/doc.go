// Command statebench measures what sharing routing state through Redis
// costs, side by side with the in-memory state in one run: the latency of
// a pick (Acquire) for new and pinned users, and the SSH connection setup
// through a gateway (key login to an in-process node). It needs
// redis-server (Debian package redis-server) and no root. From the
// repository root:
//
//	go run ./bench/statebench            # 10,000 picks, 500 logins each
//	go run ./bench/statebench -picks 2000 -logins 200
//
// It prints a Markdown report; docs/PERFORMANCE.md holds the latest.
package main
