package sshgw

import "syscall"

const quickAckSupported = true

// setQuickAck sends any pending ACK now and leaves delayed-ACK mode.
func setQuickAck(fd uintptr) {
	_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}
