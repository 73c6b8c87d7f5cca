package netx

import (
	"strings"
	"testing"
)

func TestCheckListenAddr(t *testing.T) {
	for addr, want := range map[string]string{
		"":                "", // off
		"0.0.0.0:22":      "",
		":3389":           "",
		"[::1]:0":         "",
		"127.0.0.1:65535": "",
		"nowhere":         `"nowhere" is not host:port`,
		"h:https":         `"h:https": port must be a number from 0 to 65535`,
		"h:65536":         "port must be a number",
		"h:-1":            "port must be a number",
	} {
		err := CheckListenAddr(addr)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckListenAddr(%q) = %v, want %q", addr, err, want)
		}
	}
}
