package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/gateway/recording"
)

// TestRecordingsAreForOps: the read token lists nodes but not
// recordings; the write token lists and plays them, and both are logged.
func TestRecordingsAreForOps(t *testing.T) {
	st, err := recording.Open(recording.Config{}.WithDefaults(t.TempDir()), recording.Options{Gateway: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := st.Start(recording.Meta{User: "alice", Node: "n1", Kind: "pty"})
	r.Output([]byte("hello\n"))
	m := r.Finish(0)

	write, read := "w-token-0123456789abcdef0123456789", "r-token-0123456789abcdef0123456789"
	s, err := New(Config{Listen: "0.0.0.0:9090", TokenFile: writeTok(t, write), ReadTokenFile: writeTok(t, read)}, testPool(t), Options{Recordings: st})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func(path, tok string) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Host = "127.0.0.1:9090"
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, body, _ := get("/api/recordings", read); code != http.StatusForbidden || !strings.Contains(body, "recordings are for ops") {
		t.Fatalf("read token: %d %s", code, body)
	}
	if code, _, _ := get("/api/recordings/"+m.ID, read); code != http.StatusForbidden {
		t.Fatalf("read token playing: %d", code)
	}
	if code, body, _ := get("/api/recordings?user=alice", write); code != 200 || !strings.Contains(body, m.ID) {
		t.Fatalf("write token: %d %s", code, body)
	}
	if code, body, _ := get("/api/recordings?since=soon", write); code != 400 {
		t.Fatalf("bad since: %d %s", code, body)
	}
	code, body, h := get("/api/recordings/"+m.ID, write)
	if code != 200 || h.Get("Content-Type") != "application/x-asciicast" || !strings.Contains(body, `"hello\n"`) {
		t.Fatalf("play: %d %v %s", code, h, body)
	}
	if code, _, _ := get("/api/recordings/20261208T000000Z-alice-00000000", write); code != 404 {
		t.Fatalf("unknown recording: %d", code)
	}
}
