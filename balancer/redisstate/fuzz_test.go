package redisstate

import (
	"testing"
)

// FuzzDecodePin feeds any text to the pin decoder, which reads what Redis
// holds (written by any gateway, or by hand): it returns a pin or an
// error, does not panic, and what it accepts encodes back to a pin it
// reads the same.
func FuzzDecodePin(f *testing.F) {
	f.Add("node-1\t1700000000000\tbalancer\t\t1700000000000000")
	f.Add("\t0\t\tnode-2\t1")
	f.Add("node-1\tx\tops\t\t1")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		vp, err := decodePin(raw)
		if err != nil {
			return
		}
		again, err := decodePin(encodePin(vp))
		if err != nil || again != vp {
			t.Fatalf("%q decoded to %+v, which encodes to one read as %+v, %v", raw, vp, again, err)
		}
	})
}

// FuzzDecodeNotice feeds any text to the pin-notice decoder, which reads
// what any client may publish on the channel.
func FuzzDecodeNotice(f *testing.F) {
	f.Add("gw-a\talice\tnode-1\t1700000000000\tbalancer\t\t1700000000000000")
	f.Add("gw-a\t\t")
	f.Add("gw-a")
	f.Fuzz(func(t *testing.T, raw string) {
		user, _, err := decodeNotice(raw)
		if err == nil && user == "" {
			t.Fatalf("%q: a notice without a user was accepted", raw)
		}
	})
}
