package app

import (
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
)

func TestHandoverRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 8, 1, 2, 3, 4, time.UTC)
	msgs := []handoverMsg{
		{kind: handoverPin, pin: handoverPinMsg{User: "alice", Node: "node-1", By: balancer.ByUser, Until: at}},
		{kind: handoverPin, pin: handoverPinMsg{User: "bob", Node: "node-2", By: balancer.ByBalancer}},
		{kind: handoverSession, session: handoverSessionMsg{ID: 7, User: "alice", Node: "node-1", Protocol: balancer.SSH, Client: "192.0.2.1:5000", Started: at}},
		{kind: handoverGo},
		{kind: handoverEnd, id: 7},
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		buf.Write(encodeHandover(m))
	}
	r := newHandoverReader(&buf)
	for i, want := range msgs {
		got, err := r.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("message %d = %+v, want %+v", i, got, want)
		}
	}
	if _, err := r.next(); err != io.EOF {
		t.Errorf("after the last message: %v, want EOF", err)
	}
}

func TestHandoverDecodeRefuses(t *testing.T) {
	for _, line := range []string{
		"", "go ", "go now", "end", "end 0", "end -1", "end x", "end 1 2",
		"pin", "pin {}", `pin {"user":"a"}`, `pin {"user":"a","node":"n","extra":1}`, `pin {"user":"a","node":"n"} {}`,
		`session {"id":1,"user":"a","node":"n"}`, `session {"id":0,"user":"a","node":"n","protocol":"ssh"}`,
		`session {"id":1,"user":"a","node":"n","protocol":"ssh","started":"yesterday"}`,
		"hello", strings.Repeat("x", 100),
	} {
		if m, err := decodeHandover(line); err == nil {
			t.Errorf("decodeHandover(%q) = %+v, want an error", line, m)
		}
	}
}

func TestHandoverLongLine(t *testing.T) {
	r := newHandoverReader(strings.NewReader("pin " + strings.Repeat("x", maxHandoverLine+1) + "\ngo\n"))
	if _, err := r.next(); err == nil || err == io.EOF {
		t.Errorf("a line over the limit: %v, want an error", err)
	}
}

// FuzzDecodeHandover: the lines come from another process; whatever they
// hold, decoding neither panics nor accepts a message that does not
// encode back to one that decodes the same.
func FuzzDecodeHandover(f *testing.F) {
	for _, s := range []string{"go", "end 12", `pin {"user":"a","node":"n","by":"ops","until":"2026-12-08T01:02:03Z"}`,
		`session {"id":3,"user":"a","node":"n","protocol":"ssh","client":"192.0.2.1:1","started":"2026-12-08T01:02:03Z"}`, "end 99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m, err := decodeHandover(line)
		if err != nil {
			return
		}
		enc := encodeHandover(m)
		again, err := decodeHandover(strings.TrimSuffix(string(enc), "\n"))
		if err != nil {
			t.Fatalf("%q decoded, but its encoding %q does not: %v", line, enc, err)
		}
		if !bytes.Equal(encodeHandover(again), enc) {
			t.Fatalf("%q: encodings differ after a round trip", line)
		}
	})
}
