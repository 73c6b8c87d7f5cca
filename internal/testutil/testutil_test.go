package testutil

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func TestEventuallyReturnsOnceTrue(t *testing.T) {
	var n atomic.Int32
	Eventually(t, time.Second, "the third call", func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Fatalf("condition called %d times, want 3", n.Load())
	}
}

// fakeTB records a Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

func TestEventuallyFailsAfterDeadline(t *testing.T) {
	f := &fakeTB{TB: t}
	start := time.Now()
	func() {
		defer func() { _ = recover() }()
		Eventually(f, 50*time.Millisecond, "never", func() bool { return false })
	}()
	if f.failed == "" {
		t.Fatal("Eventually did not fail on a condition that never holds")
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("Eventually failed before its deadline")
	}
}

func TestServeLine(t *testing.T) {
	addr := ServeLine(t, "127.0.0.1:0", "SSH-2.0-test\r\n")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "SSH-2.0-test\r\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	var b SyncBuffer
	b.Write([]byte("ab"))
	if b.String() != "ab" || b.Len() != 2 {
		t.Fatalf("SyncBuffer %q", b.String())
	}
}
