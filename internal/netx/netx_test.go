package netx

import (
	"errors"
	"net"
	"testing"
	"time"
)

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":             "192.0.2.7",
		"::ffff:192.0.2.7":      "192.0.2.7",
		"2001:db8:1:2:aaaa::1":  "2001:db8:1:2::/64",
		"2001:db8:1:2:bbbb::99": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":       "2001:db8:1:3::/64",
	} {
		if got := AddrKey(&net.TCPAddr{IP: net.ParseIP(in), Port: 5000}); got != want {
			t.Errorf("AddrKey(%s) = %s, want %s", in, got, want)
		}
	}
	if got := AddrKey(fakeAddr("[2001:db8:1:2::5]:22")); got != "2001:db8:1:2::/64" {
		t.Errorf("from a string address: %s", got)
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

type tempErr struct{}

func (tempErr) Error() string   { return "too many open files" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

func TestAcceptBackoff(t *testing.T) {
	var b AcceptBackoff
	var got []time.Duration
	for range 3 {
		d, ok := b.Temporary(tempErr{})
		if !ok {
			t.Fatal("a temporary error was not taken as one")
		}
		got = append(got, d)
	}
	if got[0] != 5*time.Millisecond || got[1] != 10*time.Millisecond || got[2] != 20*time.Millisecond {
		t.Fatalf("delays %v", got)
	}
	if _, ok := b.Temporary(errors.New("use of closed network connection")); ok {
		t.Fatal("a permanent error was taken as temporary")
	}
	b.Reset()
	if d, _ := b.Temporary(tempErr{}); d != 5*time.Millisecond {
		t.Fatalf("after Reset: %s", d)
	}
}
