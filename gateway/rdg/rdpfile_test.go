package rdg

import (
	"strings"
	"testing"
)

func TestRDPFile(t *testing.T) {
	f := File{Target: "pool", Gateway: "gw.example:8443", Token: "pg1.abc.def", User: "alice"}
	b, err := f.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.HasSuffix(s, "\r\n") {
		t.Fatalf("file does not end with CRLF: %q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\r\n"), "\r\n")
	got := map[string]string{}
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			t.Fatalf("line %q holds a bare CR or LF", l)
		}
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 || (parts[1] != "s" && parts[1] != "i") {
			t.Fatalf("line %q is not key:type:value", l)
		}
		k := parts[0] + ":" + parts[1]
		if _, dup := got[k]; dup {
			t.Fatalf("%s twice", k)
		}
		got[k] = parts[2]
	}
	want := map[string]string{
		"full address:s":              "pool",
		"gatewayhostname:s":           "gw.example:8443",
		"gatewayusagemethod:i":        "1",
		"gatewayprofileusagemethod:i": "1",
		"gatewaycredentialssource:i":  "5",
		"gatewayaccesstoken:s":        "pg1.abc.def",
		"username:s":                  "alice",
		"prompt for credentials:i":    "0",
	}
	if len(got) != len(want) {
		t.Errorf("file has %d settings, want %d:\n%s", len(got), len(want), s)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if !strings.HasPrefix(s, "full address:s:pool\r\n") {
		t.Errorf("file does not start with the full address: %q", s)
	}
}

func TestRDPFileRefusals(t *testing.T) {
	good := File{Target: "pool", Gateway: "gw.example", Token: "pg1.a.b", User: "alice"}
	for _, tc := range []struct {
		name string
		edit func(*File)
		key  string
	}{
		{"empty target", func(f *File) { f.Target = "" }, "full address"},
		{"empty gateway", func(f *File) { f.Gateway = "" }, "gatewayhostname"},
		{"empty token", func(f *File) { f.Token = "" }, "gatewayaccesstoken"},
		{"empty user", func(f *File) { f.User = "" }, "username"},
		{"LF in token", func(f *File) { f.Token = "pg1.a\ngatewayhostname:s:evil" }, "gatewayaccesstoken"},
		{"CR in user", func(f *File) { f.User = "alice\r" }, "username"},
		{"CRLF in gateway", func(f *File) { f.Gateway = "gw\r\nfull address:s:evil" }, "gatewayhostname"},
		{"LF in target", func(f *File) { f.Target = "pool\n" }, "full address"},
		{"NUL in user", func(f *File) { f.User = "al\x00ice" }, "username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := good
			tc.edit(&f)
			b, err := f.Bytes()
			if err == nil {
				t.Fatalf("file written: %q", b)
			}
			if b != nil {
				t.Errorf("refusal returned %d bytes", len(b))
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("error %q does not name %s", err, tc.key)
			}
			if f.Token != "" && f.Token != good.Token && strings.Contains(err.Error(), f.Token) {
				t.Errorf("error %q quotes the token", err)
			}
		})
	}
}
