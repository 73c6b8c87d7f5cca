package netx

import (
	"fmt"
	"net"
	"strconv"
)

// CheckListenAddr reports what is wrong with addr as a listen address, or
// nil: it must be host:port, with a port number from 0 to 65535 (0 picks
// a free port); the host may be empty (every address). An empty addr is
// no error: the front end is off, or takes its default. The error names
// addr and not the config key: the caller prefixes that.
func CheckListenAddr(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}
