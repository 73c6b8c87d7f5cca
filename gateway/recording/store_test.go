package recording

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func open(t *testing.T, cfg Config) *Store {
	t.Helper()
	cfg = cfg.WithDefaults(t.TempDir())
	s, err := Open(cfg, Options{Gateway: "gw-a"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// events reads a cast file back: its header and events.
func events(t *testing.T, s *Store, id string) (map[string]any, [][3]any) {
	t.Helper()
	f, _, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	var hdr map[string]any
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil {
		t.Fatalf("header %q: %v", sc.Text(), err)
	}
	var evs [][3]any
	for sc.Scan() {
		var e [3]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return hdr, evs
}

func TestRecordingRoundTrip(t *testing.T) {
	s := open(t, Config{})
	r, err := s.Start(Meta{User: "alice", Node: "n1", Client: "192.0.2.1:5", Kind: "pty", Term: "xterm", Width: 90, Height: 30, Command: ""})
	if err != nil {
		t.Fatal(err)
	}
	r.Output([]byte("h\xc3")) // "é" cut between two reads
	r.Output([]byte("\xa9llo\n"))
	r.Input([]byte("secret\n")) // not recorded: recording.input is off
	r.Resize(100, 40)
	m := r.Finish(0)
	if m.Incomplete || m.Exit != 0 || m.Size == 0 || m.Gateway != "gw-a" || m.End.IsZero() || !ValidID(m.ID) {
		t.Fatalf("meta %+v", m)
	}
	hdr, evs := events(t, s, m.ID)
	if hdr["version"] != 2.0 || hdr["width"] != 90.0 || hdr["height"] != 30.0 {
		t.Fatalf("header %v", hdr)
	}
	var out strings.Builder
	for _, e := range evs {
		switch e[1] {
		case "o":
			out.WriteString(e[2].(string))
		case "i":
			t.Fatalf("input recorded: %v", e)
		case "r":
			if e[2] != "100x40" {
				t.Fatalf("resize %v", e)
			}
		}
	}
	if out.String() != "héllo\n" {
		t.Fatalf("output %q, want the UTF-8 rejoined", out.String())
	}
	list, err := s.List(Filter{User: "alice"})
	if err != nil || len(list) != 1 || list[0].ID != m.ID {
		t.Fatalf("List: %v %v", list, err)
	}
	if list, _ := s.List(Filter{User: "bob"}); len(list) != 0 {
		t.Fatalf("List bob: %v", list)
	}
	if list, _ := s.List(Filter{Since: time.Now().Add(time.Hour)}); len(list) != 0 {
		t.Fatalf("List since the future: %v", list)
	}
	for _, bad := range []string{"../x", m.ID + "/../../etc", "", "20261208T000000Z-alice-zzzzzzzz"} {
		if _, _, err := s.Open(bad); err != ErrNotFound {
			t.Fatalf("Open(%q): %v", bad, err)
		}
	}
}

func TestInputOnlyWhenAsked(t *testing.T) {
	s := open(t, Config{Input: true})
	r, _ := s.Start(Meta{User: "bob", Node: "n1", Kind: "pty"})
	r.Input([]byte("ls\r"))
	m := r.Finish(-1)
	if !m.Input {
		t.Fatal("meta does not say input is recorded")
	}
	_, evs := events(t, s, m.ID)
	if len(evs) != 1 || evs[0][1] != "i" || evs[0][2] != "ls\r" {
		t.Fatalf("events %v", evs)
	}
}

// TestSlowStorageMarksIncomplete: a buffer too small for what the session
// prints drops events and says so; the session is never held up.
func TestSlowStorageMarksIncomplete(t *testing.T) {
	s := open(t, Config{BufferBytes: 64})
	r, _ := s.Start(Meta{User: "carol", Node: "n1", Kind: "pty"})
	big := []byte(strings.Repeat("x", 1000))
	start := time.Now()
	for range 100 {
		r.Output(big) // each event is over the buffer: dropped at once
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("recording held the session up")
	}
	m := r.Finish(0)
	if !m.Incomplete || !strings.Contains(m.Reason, "dropped") {
		t.Fatalf("meta %+v, want incomplete", m)
	}
	// The metadata on disk says so too.
	b, _ := os.ReadFile(filepath.Join(s.cfg.Dir, m.Start.UTC().Format("2006-01-02"), m.ID+".json"))
	if !strings.Contains(string(b), `"incomplete": true`) {
		t.Fatalf("meta file %s", b)
	}
}

// TestGatewayDiesMidSession: the metadata written at the start says the
// recording is incomplete; the cast holds what was flushed.
func TestGatewayDiesMidSession(t *testing.T) {
	s := open(t, Config{})
	r, _ := s.Start(Meta{User: "dave", Node: "n1", Kind: "pty"})
	list, _ := s.List(Filter{})
	if len(list) != 1 || !list[0].Incomplete {
		t.Fatalf("a running recording: %+v", list)
	}
	r.Output([]byte("partial"))
	f, _, _ := s.Open(r.ID())
	b, _ := io.ReadAll(f)
	f.Close()
	if !strings.Contains(string(b), `"version":2`) {
		t.Fatalf("header not on disk: %q", b)
	}
	r.Finish(0)
}

func TestWritableAndValidate(t *testing.T) {
	s := open(t, Config{})
	if err := s.Writable(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{Keep: time.Minute}, {Dir: "rel/dir"}, {BufferBytes: -1}} {
		if c.Validate() == nil {
			t.Errorf("Validate(%+v) accepted", c)
		}
	}
}

// FuzzAppendJSONString: the writer's escaper reads back, through
// encoding/json, as what json.Marshal of the same bytes reads back as.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b\\c\n\r\t\x00\x1b[31m", "é\xc3", "\xff\xfe", "\u2028\u2029", "<&>"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := appendJSONString(nil, b)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q escaped to invalid JSON %s: %v", b, got, err)
		}
		want, _ := json.Marshal(string(b))
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Fatalf("%q: read back %q, encoding/json's %q", b, back, wantBack)
		}
		if bytes.ContainsAny(got[1:len(got)-1], "\n\r") {
			t.Fatalf("a line break in %s", got)
		}
	})
}
