package netx

import (
	"errors"
	"net"
	"testing"
)

func TestSlotsCaps(t *testing.T) {
	for _, tt := range []struct {
		name      string
		slots     *Slots
		keys      []string // taken in order
		wantFails []error  // per key: nil, or the refusal
	}{
		{"zero value: no cap", &Slots{}, []string{"a", "a", "a", "b"}, []error{nil, nil, nil, nil}},
		{"global cap is exact", &Slots{Max: 3}, []string{"a", "b", "c", "d"}, []error{nil, nil, nil, ErrSlotsFull}},
		{"per-address cap", &Slots{Max: 10, PerAddress: 2}, []string{"a", "a", "a", "b"}, []error{nil, nil, ErrAddressSlotsFull, nil}},
		{"global before per-address", &Slots{Max: 2, PerAddress: 1}, []string{"a", "b", "a"}, []error{nil, nil, ErrSlotsFull}},
		{"negative caps: none", &Slots{Max: -1, PerAddress: -1}, []string{"a", "a", "a"}, []error{nil, nil, nil}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			taken := 0
			for i, key := range tt.keys {
				sl, err := tt.slots.Take(key)
				if !errors.Is(err, tt.wantFails[i]) || (err == nil) != (tt.wantFails[i] == nil) {
					t.Fatalf("take %d (%s): %v, want %v", i+1, key, err, tt.wantFails[i])
				}
				if err == nil {
					taken++
					if sl.Key() != key {
						t.Fatalf("slot key %q, want %q", sl.Key(), key)
					}
				}
			}
			if got := tt.slots.InUse(); got != taken {
				t.Fatalf("InUse %d, want %d", got, taken)
			}
		})
	}
}

// TestSlotReleaseOnce: a slot released twice (proven, then ended) gives
// back one place, and its address's share comes back too.
func TestSlotReleaseOnce(t *testing.T) {
	s := &Slots{Max: 2, PerAddress: 1}
	a, _ := s.Take("a")
	b, _ := s.Take("b")
	if _, err := s.Take("c"); !errors.Is(err, ErrSlotsFull) {
		t.Fatalf("third: %v", err)
	}
	a.Release()
	a.Release()
	if n := s.InUse(); n != 1 {
		t.Fatalf("InUse after a double release: %d, want 1", n)
	}
	if _, err := s.Take("b"); !errors.Is(err, ErrAddressSlotsFull) {
		t.Fatalf("b's second while it holds one: %v", err)
	}
	if _, err := s.Take("a"); err != nil {
		t.Fatalf("a again after its release: %v", err)
	}
	b.Release()
	var none *Slot
	none.Release() // a server without Slots hands out nil slots
	if none.Key() != "" {
		t.Fatal("nil slot has a key")
	}
}

// TestSlotsIPv6By64: addresses of one IPv6 /64 share one per-address
// share, as AddrKey groups them.
func TestSlotsIPv6By64(t *testing.T) {
	s := &Slots{PerAddress: 1}
	key := func(ip string) string { return AddrKey(&net.TCPAddr{IP: net.ParseIP(ip), Port: 22}) }
	if _, err := s.Take(key("2001:db8:1:2::1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Take(key("2001:db8:1:2:ffff::9")); !errors.Is(err, ErrAddressSlotsFull) {
		t.Fatalf("same /64: %v", err)
	}
	if _, err := s.Take(key("2001:db8:1:3::1")); err != nil {
		t.Fatalf("another /64: %v", err)
	}
}
