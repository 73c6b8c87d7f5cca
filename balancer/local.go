package balancer

// HubNode names the node whose JupyterHub listens on addr (its Node.HTTP),
// or "" when no node in the set has that address. It reads this gateway's
// own node set only, never the shared state, so it is cheap enough for
// every new connection to a hub.
func (b *Balancer) HubNode(addr string) string {
	if addr == "" {
		return "" // a node without a hub has HTTP ""
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, n := range b.order {
		if n.HTTP == addr {
			return n.Name
		}
	}
	return ""
}
