package balancer

import "testing"

func TestHubNode(t *testing.T) {
	b := New(Config{}, Options{})
	b.SetNodes([]Node{
		{Name: "node-1", SSH: "10.0.0.4:22", HTTP: "10.0.0.4:8000"},
		{Name: "node-2", SSH: "10.0.0.5:22"},
	})
	for _, tc := range []struct{ addr, want string }{
		{"10.0.0.4:8000", "node-1"},
		{"10.0.0.5:8000", ""}, // node-2 has no hub
		{"10.0.0.4:22", ""},   // an SSH address is not a hub's
		{"", ""},
	} {
		if got := b.HubNode(tc.addr); got != tc.want {
			t.Errorf("HubNode(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	b.SetNodes([]Node{{Name: "node-2", SSH: "10.0.0.5:22"}})
	if got := b.HubNode("10.0.0.4:8000"); got != "" {
		t.Errorf("HubNode of a node that left = %q, want \"\"", got)
	}
}
