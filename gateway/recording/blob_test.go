package recording

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"golang.org/x/sys/unix"

	"github.com/poolgate/poolgate/internal/testutil"
)

// The Blob tests run Azurite, the Azure Storage emulator, from npm
// (pinned by testdata/azurite/package-lock.json), blob service only, on
// 127.0.0.1 with a free port and a fresh workspace per test, signing with
// its well-known development account key.

const (
	azuriteDir     = "testdata/azurite"
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

var (
	azuriteOnce sync.Once
	azuriteErr  error
	azuriteTook time.Duration
)

// installAzurite runs 'npm ci' in testdata/azurite once per test binary,
// and not at all while node_modules holds what the lock file names (a
// stamp with the lock's hash is written after a good install). A file
// lock keeps two test binaries from installing at once.
func installAzurite() error {
	azuriteOnce.Do(func() {
		start := time.Now()
		defer func() { azuriteTook = time.Since(start) }()
		lock, err := os.ReadFile(filepath.Join(azuriteDir, "package-lock.json"))
		if err != nil {
			azuriteErr = err
			return
		}
		sum := sha256.Sum256(lock)
		want := hex.EncodeToString(sum[:])
		stamp := filepath.Join(azuriteDir, "node_modules", ".poolgate-lock-sha256")

		lf, err := os.OpenFile(filepath.Join(azuriteDir, ".npm-ci.lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			azuriteErr = err
			return
		}
		defer lf.Close()
		if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
			azuriteErr = err
			return
		}
		defer func() { _ = unix.Flock(int(lf.Fd()), unix.LOCK_UN) }()

		if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
		cmd.Dir = azuriteDir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			azuriteErr = fmt.Errorf("npm ci in gateway/recording/%s: %v\n%s", azuriteDir, err, out.String())
			return
		}
		azuriteErr = os.WriteFile(stamp, []byte(want+"\n"), 0o644)
	})
	return azuriteErr
}

// azurite is a running emulator.
type azurite struct {
	cmd  *exec.Cmd
	url  string // http://127.0.0.1:PORT/devstoreaccount1
	out  testutil.SyncBuffer
	log  testutil.SyncBuffer
	done chan struct{}
}

var azuriteReady = regexp.MustCompile(`successfully listens on (http://127\.0\.0\.1:[0-9]+)`)

// startAzurite starts the emulator and stops it when the test ends. It
// needs node and npm: without them it fails when CI is set, and skips
// otherwise.
func startAzurite(t *testing.T) *azurite {
	t.Helper()
	var missing []string
	for _, b := range []string{"node", "npm"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("the Blob tests run Azurite, which needs %s", strings.Join(missing, " and "))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + " (skipped because CI is unset; with CI set this fails)")
	}
	if err := installAzurite(); err != nil {
		t.Fatal(err)
	}
	bin, err := filepath.Abs(filepath.Join(azuriteDir, "node_modules", ".bin", "azurite-blob"))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	a := &azurite{done: make(chan struct{})}
	a.cmd = exec.Command("node", bin, "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", work,
		"--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry")
	a.cmd.Dir = work
	a.cmd.Stdout, a.cmd.Stderr = &a.out, &a.log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	a.cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("starting Azurite: %v", err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("Azurite output:\n%s\n%s", a.out.String(), a.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := azuriteReady.FindStringSubmatch(a.out.String()); m != nil {
			a.url = m[1] + "/" + azuriteAccount
			break
		}
		select {
		case <-a.done:
			t.Fatalf("Azurite exited at start (%v):\n%s\n%s", a.cmd.ProcessState, a.out.String(), a.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("Azurite not ready after 30s:\n%s\n%s", a.out.String(), a.log.String())
		}
	}
	t.Logf("Azurite %s ready in %v (the npm ci step, once per test binary, took %v)", a.url, time.Since(start).Round(time.Millisecond), azuriteTook.Round(time.Millisecond))
	return a
}

// Stop ends Azurite's process group (SIGTERM, SIGKILL after 5 s) and
// waits for it. Safe to call more than once.
func (a *azurite) Stop() {
	select {
	case <-a.done:
		return
	default:
	}
	pg := a.cmd.Process.Pid
	_ = syscall.Kill(-pg, syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pg, syscall.SIGKILL)
		<-a.done
	}
	_ = syscall.Kill(-pg, syscall.SIGKILL) // anything of the group left behind
}

// loopbackOnly is an HTTP client that dials nothing but loopback
// addresses: no test request can reach Azure or the instance metadata
// service, whatever a bug would send.
func loopbackOnly() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("test transport refuses to dial %s", addr)
			}
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// clientOptions: loopback only, and retries quick enough for a test.
func clientOptions() *azblob.ClientOptions {
	o := &azblob.ClientOptions{}
	o.Transport = loopbackOnly()
	o.Retry = policy.RetryOptions{MaxRetries: 1, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond}
	return o
}

// newBlob makes the container (a fresh one) and returns the backend on it
// and a client of the container for the test to look with.
func newBlob(t *testing.T, a *azurite, name string) (*Blob, *container.Client) {
	t.Helper()
	key, err := azblob.NewSharedKeyCredential(azuriteAccount, azuriteKey)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := azblob.NewClientWithSharedKeyCredential(a.url+"/", key, clientOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := svc.CreateContainer(ctx, name, nil); err != nil {
		t.Fatalf("creating container %s: %v", name, err)
	}
	b, err := NewBlob(BlobConfig{AccountURL: a.url, Container: name}, nil, &BlobOptions{Client: clientOptions(), SharedKey: key, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return b, svc.ServiceClient().NewContainerClient(name)
}

// download reads a blob whole.
func download(t *testing.T, c *container.Client, name string) ([]byte, blob.DownloadStreamResponse) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		t.Fatalf("download %s: %v", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("download %s: %v", name, err)
	}
	return b, resp
}

// props reads a blob's properties.
func props(t *testing.T, c *container.Client, name string) blob.GetPropertiesResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p, err := c.NewBlobClient(name).GetProperties(ctx, nil)
	if err != nil {
		t.Fatalf("properties of %s: %v", name, err)
	}
	return p
}

// parseCast checks a cast file is asciicast v2 and returns its header and
// the text of its output events.
func parseCast(t *testing.T, b []byte) (map[string]any, string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var hdr map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &hdr); err != nil || hdr["version"] != 2.0 {
		t.Fatalf("header %q: %v", lines[0], err)
	}
	var out strings.Builder
	for _, l := range lines[1:] {
		var e [3]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("event %q: %v", l, err)
		}
		if _, ok := e[0].(float64); !ok {
			t.Fatalf("event %q: no time", l)
		}
		if e[1] == "o" {
			out.WriteString(e[2].(string))
		}
	}
	return hdr, out.String()
}

func openBlobStore(t *testing.T, b *Blob) *Store {
	t.Helper()
	s, err := Open(Config{}.WithDefaults(""), Options{Gateway: "gw-blob", Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBlobRecording: a Store records through Blob, and reads back what
// it wrote.
func TestBlobRecording(t *testing.T) {
	a := startAzurite(t)
	b, c := newBlob(t, a, "recordings")
	s := openBlobStore(t, b)
	r, err := s.Start(Meta{User: "alice", Node: "n1", Client: "192.0.2.1:5", Kind: "pty", Term: "xterm", Width: 90, Height: 30})
	if err != nil {
		t.Fatal(err)
	}
	r.Output([]byte("h\xc3"))
	r.Output([]byte("\xa9llo\n"))
	r.Resize(100, 40)
	r.Output([]byte("bye\n"))
	m := r.Finish(0)
	if m.Incomplete || m.Exit != 0 || m.Size == 0 || m.Gateway != "gw-blob" || m.End.IsZero() {
		t.Fatalf("meta %+v", m)
	}

	list, err := s.List(Filter{User: "alice"})
	if err != nil || len(list) != 1 || list[0].ID != m.ID || list[0].Size != m.Size || list[0].Incomplete {
		t.Fatalf("List alice: %+v %v", list, err)
	}
	if list, err := s.List(Filter{User: "bob"}); err != nil || len(list) != 0 {
		t.Fatalf("List bob: %+v %v", list, err)
	}
	hdr, evs := events(t, s, m.ID) // through Store.Open and Blob.Open
	if hdr["width"] != 90.0 || hdr["height"] != 30.0 {
		t.Fatalf("header %v", hdr)
	}
	var out strings.Builder
	resized := false
	for _, e := range evs {
		switch e[1] {
		case "o":
			out.WriteString(e[2].(string))
		case "r":
			resized = e[2] == "100x40"
		}
	}
	if out.String() != "héllo\nbye\n" || !resized {
		t.Fatalf("output %q, resized %v", out.String(), resized)
	}

	day := m.Start.UTC().Format("2006-01-02")
	cast := props(t, c, day+"/"+m.ID+".cast")
	if cast.BlobType == nil || *cast.BlobType != blob.BlobTypeAppendBlob || cast.ContentType == nil || *cast.ContentType != "application/x-asciicast" {
		t.Errorf("cast blob type %v, content type %v", cast.BlobType, cast.ContentType)
	}
	if cast.ContentLength == nil || *cast.ContentLength != m.Size {
		t.Errorf("cast blob size %v, meta says %d", cast.ContentLength, m.Size)
	}
	// Written once each, never replaced (a WORM policy may hold the
	// container): the start's metadata says in progress, the end's is
	// the recording's.
	start, _ := download(t, c, day+"/"+m.ID+".json")
	var first Meta
	if err := json.Unmarshal(start, &first); err != nil || !first.Incomplete || !first.End.IsZero() {
		t.Errorf("start meta blob %s: %v", start, err)
	}
	js, resp := download(t, c, day+"/"+m.ID+".end.json")
	if resp.ContentType == nil || *resp.ContentType != "application/json" {
		t.Errorf("meta blob content type %v", resp.ContentType)
	}
	var got Meta
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatalf("meta blob %s: %v", js, err)
	}
	if got.ID != m.ID || got.User != "alice" || got.Node != "n1" || got.Kind != "pty" || got.Term != "xterm" ||
		got.Gateway != "gw-blob" || got.Exit != 0 || got.Size != m.Size || got.Incomplete || got.Reason != "" ||
		!got.End.Equal(m.End) || !got.Start.Equal(m.Start) || got.Width != 90 || got.Height != 30 {
		t.Errorf("meta blob %s, want %+v", js, m)
	}
}

// TestBlobGatewayDies: a gateway that stops mid-session leaves the
// header and the events written before the last Sync, and metadata that
// says the recording is incomplete.
func TestBlobGatewayDies(t *testing.T) {
	a := startAzurite(t)
	b, c := newBlob(t, a, "recordings")
	s := openBlobStore(t, b)
	r, err := s.Start(Meta{User: "dave", Node: "n1", Kind: "pty"})
	if err != nil {
		t.Fatal(err)
	}
	day := r.meta.Start.UTC().Format("2006-01-02")
	castBlob := day + "/" + r.ID() + ".cast"
	head := *props(t, c, castBlob).ContentLength // the header, appended by Start
	if head == 0 {
		t.Fatal("Start appended no header")
	}
	r.Output([]byte("before the sync\n"))
	start := time.Now()
	testutil.Eventually(t, 10*time.Second, "the Store's periodic Sync to append the output", func() bool {
		return *props(t, c, castBlob).ContentLength > head
	})
	t.Logf("the output was appended %v after it was written", time.Since(start).Round(time.Millisecond))
	// The gateway dies here: the recording is never used again. (Finish
	// runs at cleanup, after the checks, only to end its goroutine.)
	t.Cleanup(func() { r.Finish(-1) })

	b2, _ := download(t, c, castBlob)
	if _, out := parseCast(t, b2); out != "before the sync\n" {
		t.Fatalf("cast %q: output %q", b2, out)
	}
	js, _ := download(t, c, day+"/"+r.ID()+".json")
	var m Meta
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	if !m.Incomplete || m.Reason != "in progress, or the gateway stopped before the session ended" || !m.End.IsZero() || m.User != "dave" {
		t.Fatalf("meta blob of a dead gateway's recording: %s", js)
	}
	list, err := s.List(Filter{})
	if err != nil || len(list) != 1 || !list[0].Incomplete {
		t.Fatalf("List: %+v %v", list, err)
	}
}

// TestBlobStorageStops: with Azurite gone mid-session the session is
// never held up, the recording ends marked incomplete, and Writable says
// what fails without the key.
func TestBlobStorageStops(t *testing.T) {
	a := startAzurite(t)
	b, _ := newBlob(t, a, "recordings")
	s := openBlobStore(t, b)
	r, err := s.Start(Meta{User: "erin", Node: "n1", Kind: "pty"})
	if err != nil {
		t.Fatal(err)
	}
	r.Output([]byte("still up\n"))
	a.Stop()

	kib := bytes.Repeat([]byte("x"), 1024)
	start := time.Now()
	for range 1000 {
		r.Output(kib)
	}
	took := time.Since(start)
	t.Logf("1000 outputs of 1 KiB with storage stopped took %v", took)
	if took > 5*time.Second {
		t.Fatalf("1000 outputs took %v: the recording held the session up", took)
	}
	start = time.Now()
	m := r.Finish(0)
	t.Logf("Finish with storage stopped took %v: %+v", time.Since(start).Round(time.Millisecond), m)
	if !m.Incomplete || !strings.Contains(m.Reason, "storage failing") {
		t.Fatalf("meta %+v, want incomplete: storage failing", m)
	}
	werr := b.Writable()
	if werr == nil {
		t.Fatal("Writable with storage stopped: no error")
	}
	t.Logf("Writable: %v", werr)
	for _, secret := range []string{azuriteKey, azuriteKey[:16], "sig="} {
		if strings.Contains(werr.Error(), secret) || strings.Contains(m.Reason, secret) {
			t.Errorf("an error shows %q: %v / %s", secret, werr, m.Reason)
		}
	}
	if !strings.Contains(werr.Error(), "recordings/.probe/") || strings.Contains(werr.Error(), "\n") {
		t.Errorf("Writable's error %q should name the probe blob, in one line", werr)
	}
}

// TestBlobSweepOpenAndSink: Sweep deletes the days before the cutoff
// only; Open refuses unknown and malformed IDs; the sink appends a block
// per Sync, 4 MiB at most each.
func TestBlobSweepOpenAndSink(t *testing.T) {
	a := startAzurite(t)
	b, c := newBlob(t, a, "sweep-test")
	if err := b.Writable(); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for i, day := range []string{"20260107", "20260108", "20260109"} {
		m := Meta{ID: fmt.Sprintf("%sT120000Z-eve-%08x", day, i), User: "eve", Start: time.Date(2026, 1, 7+i, 12, 0, 0, 0, time.UTC)}
		sk, err := b.Create(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sk.Write([]byte("{\"version\": 2}\n")); err != nil {
			t.Fatal(err)
		}
		if m.Size, err = sk.Close(); err != nil || m.Size != 15 {
			t.Fatalf("Close: %d %v", m.Size, err)
		}
		if err := b.PutMeta(m); err != nil {
			t.Fatal(err)
		}
		ids[day] = m.ID
	}
	if _, err := b.Create(Meta{ID: ids["20260109"]}); err == nil {
		t.Error("Create of an existing recording succeeded")
	}

	ls, err := b.List(time.Date(2026, 1, 9, 0, 0, 0, 0, time.UTC))
	if err != nil || len(ls) != 2 {
		t.Fatalf("List since Jan 9 (the day before counts, as Dir's): %+v %v", ls, err)
	}

	gone, err := b.Sweep(time.Date(2026, 1, 9, 1, 0, 0, 0, time.UTC))
	if err != nil || strings.Join(gone, " ") != "2026-01-07 2026-01-08" {
		t.Fatalf("Sweep: %v %v", gone, err)
	}
	ls, err = b.List(time.Time{})
	if err != nil || len(ls) != 1 || ls[0].ID != ids["20260109"] {
		t.Fatalf("List after Sweep: %+v %v", ls, err)
	}
	pager := c.NewListBlobsFlatPager(nil)
	var left []string
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Segment.BlobItems {
			left = append(left, *it.Name)
		}
	}
	if strings.Join(left, " ") != "2026-01-09/"+ids["20260109"]+".cast 2026-01-09/"+ids["20260109"]+".json" {
		t.Fatalf("blobs left: %q (no probe either)", left)
	}

	f, m, err := b.Open(ids["20260109"])
	if err != nil || m.Size != 15 {
		t.Fatalf("Open: %+v %v", m, err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if string(got) != "{\"version\": 2}\n" {
		t.Fatalf("cast %q", got)
	}
	for _, id := range []string{ids["20260108"], "20260110T000000Z-eve-00000000", "../x", "", "20261308T000000Z-eve-00000000", "20260109T120000Z-eve-zzzzzzzz"} {
		if _, _, err := b.Open(id); err != ErrNotFound {
			t.Errorf("Open(%q): %v, want ErrNotFound", id, err)
		}
	}

	// One block per Sync; nothing appended for an empty one; 4 MiB at
	// most per block.
	m = Meta{ID: "20260109T130000Z-eve-0000abcd"}
	sk, err := b.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	castBlob := "2026-01-09/" + m.ID + ".cast"
	_, _ = sk.Write([]byte("a"))
	_, _ = sk.Write([]byte("b"))
	if err := sk.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := sk.Sync(); err != nil {
		t.Fatal(err)
	}
	if p := props(t, c, castBlob); *p.ContentLength != 2 || *p.BlobCommittedBlockCount != 1 {
		t.Fatalf("after two writes and two Syncs: %d bytes in %d blocks, want 2 in 1", *p.ContentLength, *p.BlobCommittedBlockCount)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), (9<<20)/16) // 9 MiB
	if _, err := sk.Write(big); err != nil {
		t.Fatal(err)
	}
	size, err := sk.Close()
	if err != nil || size != 2+9<<20 {
		t.Fatalf("Close: %d %v", size, err)
	}
	if p := props(t, c, castBlob); *p.ContentLength != size || *p.BlobCommittedBlockCount != 4 {
		t.Fatalf("after 9 MiB more: %d bytes in %d blocks, want %d in 4", *p.ContentLength, *p.BlobCommittedBlockCount, size)
	}
	all, _ := download(t, c, castBlob)
	if !bytes.Equal(all, append([]byte("ab"), big...)) {
		t.Fatal("the cast blob is not what was written")
	}
	if _, err := sk.Write([]byte("late")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

func TestBlobConfigValidate(t *testing.T) {
	for _, c := range []BlobConfig{
		{AccountURL: "https://acct.blob.core.windows.net", Container: "recordings"},
		{AccountURL: "https://acct.blob.core.windows.net/", Container: "rec-01"},
		{AccountURL: "http://127.0.0.1:10000/devstoreaccount1", Container: "abc"},
		{AccountURL: "https://acct.blob.core.windows.net", Container: strings.Repeat("a", 63)},
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", c, err)
		}
	}
	good := "recordings"
	for _, u := range []string{
		"", "acct.blob.core.windows.net", "ftp://acct.blob.core.windows.net", "http://acct.blob.core.windows.net",
		"http://localhost:10000/devstoreaccount1", "http://10.0.0.1:10000", "https:///path", "https://",
		"https://acct.blob.core.windows.net/?sv=2022-11-02&sig=SECRETSIG", "https://acct.blob.core.windows.net?",
		"https://user:SECRETPW@acct.blob.core.windows.net", "https://acct.blob.core.windows.net/#frag",
		"http://169.254.169.254/metadata",
	} {
		err := BlobConfig{AccountURL: u, Container: good}.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "account_url: ") || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("Validate(account_url %q): %v", u, err)
		}
	}
	for _, n := range []string{"", "ab", strings.Repeat("a", 64), "Recordings", "rec--x", "-rec", "rec-", "rec_x", "$root", "rec.x"} {
		err := BlobConfig{AccountURL: "https://acct.blob.core.windows.net", Container: n}.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "container: ") {
			t.Errorf("Validate(container %q): %v", n, err)
		}
	}
	err := BlobConfig{}.Validate()
	if err == nil || !strings.Contains(err.Error(), "account_url: ") || !strings.Contains(err.Error(), "container: ") {
		t.Errorf("Validate of nothing: %v, want both keys", err)
	}
}

// countingCred counts the tokens asked for.
type countingCred struct{ n atomic.Int32 }

func (c *countingCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.n.Add(1)
	return azcore.AccessToken{}, errors.New("no token in a test")
}

// countingTransport counts requests and sends none.
type countingTransport struct{ n atomic.Int32 }

func (c *countingTransport) Do(*http.Request) (*http.Response, error) {
	c.n.Add(1)
	return nil, errors.New("no request in a test")
}

// TestNewBlobContactsNothing: making the backend sends no request and
// asks for no token; a bad configuration or no credential is refused.
func TestNewBlobContactsNothing(t *testing.T) {
	cred, tr := &countingCred{}, &countingTransport{}
	o := &azblob.ClientOptions{}
	o.Transport = tr
	b, err := NewBlob(BlobConfig{AccountURL: "https://acct.blob.core.windows.net", Container: "recordings"}, cred, &BlobOptions{Client: o})
	if err != nil || b == nil {
		t.Fatal(err)
	}
	if cred.n.Load() != 0 || tr.n.Load() != 0 {
		t.Fatalf("NewBlob asked for %d tokens and sent %d requests", cred.n.Load(), tr.n.Load())
	}
	// Writable fails: the credential gives no token; the error says what
	// failed, in one line.
	err = b.Writable()
	t.Logf("Writable: %v", err)
	if err == nil || !strings.Contains(err.Error(), "recording blob: write recordings/.probe/") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Writable with no token: %q", err)
	}
	if tr.n.Load() != 0 {
		t.Errorf("a request was sent without a token")
	}
	if _, err := NewBlob(BlobConfig{AccountURL: "https://acct.blob.core.windows.net", Container: "recordings"}, nil, nil); err == nil {
		t.Error("NewBlob without a credential succeeded")
	}
	if _, err := NewBlob(BlobConfig{AccountURL: "http://acct.blob.core.windows.net", Container: "recordings"}, cred, nil); err == nil || !strings.Contains(err.Error(), "account_url") {
		t.Errorf("NewBlob with a bad config: %v", err)
	}
}
