//go:build !linux

package httpgw

// dirty reports whether bytes are already buffered on c; elsewhere than
// Linux, bytes a hub sent on an idle connection are found when it is
// reused, as the answer's first bytes.
func (c *hubConn) dirty() bool { return c.br.Buffered() > 0 }
