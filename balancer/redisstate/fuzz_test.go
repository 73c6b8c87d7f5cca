package redisstate

import "testing"

// FuzzDecodeView feeds any text to the view script's decoder, which
// reads what Redis holds (written by any gateway, or by hand): it
// returns a view or an error and does not panic.
func FuzzDecodeView(f *testing.F) {
	f.Add(`{"nodes":{},"sessions":{}}`)
	f.Add(`{"nodes":{"node-1":["1","0","2"]},"sessions":[["1","alice","node-1","ssh","1.2.3.4","1700000000000","r1"]]}`)
	f.Add(`{"nodes":[],"sessions":[]}`)
	f.Add(`{"nodes":{"a":[]},"sessions":[[]]}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := decodeView(raw)
		if err == nil && v.Nodes == nil {
			t.Fatal("a view without error has no node map")
		}
	})
}
