package recording

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// BlobConfig names where recordings are kept in Azure Blob Storage.
type BlobConfig struct {
	// AccountURL is the storage account's blob endpoint,
	// https://ACCOUNT.blob.core.windows.net (http://127.0.0.1:PORT/ACCOUNT
	// for a local emulator such as Azurite). It carries no SAS: the
	// gateway signs in with its managed identity.
	AccountURL string `yaml:"account_url"`
	// Container holds the recordings; ops create it (the gateway does
	// not), with a lifecycle rule deleting old blobs when recordings are
	// to be kept for a time only.
	Container string `yaml:"container"`
}

// containerName is Azure's rule for container names: 3 to 63 lowercase
// letters, digits and hyphens, starting and ending with a letter or digit,
// no two hyphens in a row.
var containerName = regexp.MustCompile(`^[a-z0-9](?:-?[a-z0-9])*$`)

// Validate reports every bad setting, naming its key. It never repeats
// the URL's query or user info, which could hold a secret.
func (c BlobConfig) Validate() error {
	var errs []error
	if err := checkAccountURL(c.AccountURL); err != nil {
		errs = append(errs, fmt.Errorf("account_url: %w", err))
	}
	switch n := c.Container; {
	case n == "":
		errs = append(errs, errors.New("container: missing"))
	case len(n) < 3 || len(n) > 63:
		errs = append(errs, fmt.Errorf("container: %q must be 3 to 63 characters long, is %d", n, len(n)))
	case !containerName.MatchString(n):
		errs = append(errs, fmt.Errorf("container: %q is not a container name: lowercase letters, digits and single hyphens, starting and ending with a letter or digit", n))
	}
	return errors.Join(errs...)
}

func checkAccountURL(s string) error {
	if s == "" {
		return errors.New("missing")
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return errors.New("must carry no user info, query (no SAS token: the gateway signs in with its managed identity) or fragment")
	}
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q has no host", shown)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		// Only a local emulator (Azurite) is spoken to in clear.
		if a, err := netip.ParseAddr(u.Hostname()); err == nil && a.IsLoopback() {
			return nil
		}
		return fmt.Errorf("%q: must be https:// (http:// only for a local emulator on 127.0.0.1)", shown)
	default:
		return fmt.Errorf("%q: must be https://", shown)
	}
}

// BlobOptions are Blob's optional collaborators.
type BlobOptions struct {
	// Client configures the SDK's pipeline (transport, retries). Nil: the
	// SDK's defaults, with retries bounded as below.
	Client *azblob.ClientOptions
	// SharedKey, when set, signs requests with the account key instead
	// of the token credential: for tests and emulators (Azurite's
	// well-known devstoreaccount1 key). Production uses the credential.
	SharedKey *azblob.SharedKeyCredential
	// Timeout bounds each operation, retries included. Default 30 s.
	Timeout time.Duration
}

// Blob keeps recordings in an Azure Blob Storage container, one prefix
// per day: DAY/ID.cast, an append blob every Sync adds a block to, and
// the metadata as block blobs written once each, never replaced, so that
// a time-based retention (WORM) policy can hold the container: DAY/ID.json
// when the session starts (it says the recording is in progress) and
// DAY/ID.end.json when it ends; readers take the second when it exists.
type Blob struct {
	c       *container.Client
	name    string // the container's
	timeout time.Duration
}

// maxAppendBlock is the most one Append Block may carry (4 MiB, the
// limit of every service version).
const maxAppendBlock = 4 << 20

// NewBlob returns the backend; it contacts nothing (Writable does). cred
// signs requests (the gateway's managed identity) unless opts.SharedKey
// is set.
func NewBlob(cfg BlobConfig, cred azcore.TokenCredential, opts *BlobOptions) (*Blob, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("recording blob: %w", err)
	}
	var o BlobOptions
	if opts != nil {
		o = *opts
	}
	var co azblob.ClientOptions
	if o.Client != nil {
		co = *o.Client
	}
	if co.Retry.MaxRetries == 0 {
		co.Retry.MaxRetries = 3
	}
	if co.Retry.MaxRetryDelay == 0 {
		co.Retry.MaxRetryDelay = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	account := strings.TrimSuffix(cfg.AccountURL, "/") + "/"
	var (
		svc *azblob.Client
		err error
	)
	switch {
	case o.SharedKey != nil:
		svc, err = azblob.NewClientWithSharedKeyCredential(account, o.SharedKey, &co)
	case cred != nil:
		svc, err = azblob.NewClient(account, cred, &co)
	default:
		return nil, errors.New("recording blob: no credential")
	}
	if err != nil {
		return nil, fmt.Errorf("recording blob: %w", err)
	}
	return &Blob{c: svc.ServiceClient().NewContainerClient(cfg.Container), name: cfg.Container, timeout: o.Timeout}, nil
}

func (b *Blob) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.timeout)
}

// blobError says what failed in one line, keeping the SDK's error for
// errors.As: the SDK's own text spans lines (the whole response), and a
// transport error repeats the request URL with its query.
type blobError struct {
	msg string
	err error
}

func (e *blobError) Error() string { return e.msg }
func (e *blobError) Unwrap() error { return e.err }

// fail wraps err from op ("append to", "list") on the blob or prefix name.
func (b *Blob) fail(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &blobError{msg: fmt.Sprintf("recording blob: %s %s/%s: %s", op, b.name, name, brief(err, b.timeout)), err: err}
}

func brief(err error, timeout time.Duration) string {
	var re *azcore.ResponseError
	var ue *url.Error
	switch {
	case errors.As(err, &re):
		code := re.ErrorCode
		if code == "" {
			code = http.StatusText(re.StatusCode)
		}
		return fmt.Sprintf("%d %s", re.StatusCode, code)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer within %s", timeout)
	case errors.As(err, &ue):
		host := ""
		if u, perr := url.Parse(ue.URL); perr == nil {
			host = u.Host
		}
		return fmt.Sprintf("%s %s: %v", ue.Op, host, ue.Err)
	}
	// Others (the credential's, mostly) may span lines: one line, and
	// not too long.
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if len(msg) > 400 {
		msg = msg[:400] + "…"
	}
	return msg
}

func notFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

func castName(day, id string) string { return day + "/" + id + ".cast" }
func metaName(day, id string) string { return day + "/" + id + ".json" }

// Create makes the recording's append blob (it must not exist yet).
func (b *Blob) Create(m Meta) (Sink, error) {
	day, err := dayOf(m.ID)
	if err != nil {
		return nil, err
	}
	name := castName(day, m.ID)
	ab := b.c.NewAppendBlobClient(name)
	ctx, cancel := b.ctx()
	defer cancel()
	_, err = ab.Create(ctx, &appendblob.CreateOptions{
		HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: to.Ptr("application/x-asciicast")},
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	})
	if err != nil {
		return nil, b.fail("create", name, err)
	}
	return &blobSink{b: b, ab: ab, name: name}, nil
}

// blobSink buffers what is written and appends it at Sync: a gateway
// that dies loses what was written since the last Sync, and every block
// appended is durable at once. A full block (4 MiB) is appended by Write
// itself, so a recording holds at most that much in memory.
//
// An append blob takes at most 50,000 blocks: with the Store's Sync every
// two seconds that is 27 hours of a session that prints without a
// pause; past it appends fail and the recording is marked incomplete.
type blobSink struct {
	b    *Blob
	ab   *appendblob.Client
	name string

	mu     sync.Mutex // protects the fields below
	buf    []byte
	off    int64 // bytes appended: the blob's size
	closed bool
}

func (s *blobSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("recording blob: write to %s/%s: closed", s.b.name, s.name)
	}
	for len(s.buf) >= maxAppendBlock {
		if err := s.appendLocked(maxAppendBlock); err != nil {
			return 0, err
		}
	}
	s.buf = append(s.buf, p...)
	return len(p), nil
}

// Sync appends what was written since the last Sync, as one block (or
// more, of 4 MiB each at most); nothing when nothing was written.
func (s *blobSink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncLocked()
}

func (s *blobSink) syncLocked() error {
	for len(s.buf) > 0 {
		if err := s.appendLocked(min(len(s.buf), maxAppendBlock)); err != nil {
			return err
		}
	}
	return nil
}

// appendLocked appends the first n buffered bytes as one block at the
// offset where the last one ended: a retry of a block that was written
// but whose answer was lost fails (AppendPositionConditionNotMet) instead
// of writing the block twice, and is then recognised by the blob's size.
func (s *blobSink) appendLocked(n int) error {
	ctx, cancel := s.b.ctx()
	defer cancel()
	_, err := s.ab.AppendBlock(ctx, streaming.NopCloser(bytes.NewReader(s.buf[:n])), &appendblob.AppendBlockOptions{
		AppendPositionAccessConditions: &appendblob.AppendPositionAccessConditions{AppendPosition: to.Ptr(s.off)},
	})
	if bloberror.HasCode(err, bloberror.AppendPositionConditionNotMet) {
		props, perr := s.ab.GetProperties(ctx, nil)
		if perr == nil && props.ContentLength != nil && *props.ContentLength == s.off+int64(n) {
			err = nil
		}
	}
	if err != nil {
		return s.b.fail("append to", s.name, err)
	}
	s.off += int64(n)
	s.buf = append(s.buf[:0], s.buf[n:]...)
	return nil
}

// Close appends what is left and reports the blob's size (what was
// appended, when that fails).
func (s *blobSink) Close() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.off, nil
	}
	err := s.syncLocked()
	s.closed = true
	s.buf = nil
	return s.off, err
}

// PutMeta writes the metadata: the start's (ID.json) or, once the
// recording has ended, the end's (ID.end.json), each once.
func (b *Blob) PutMeta(m Meta) error {
	day, err := dayOf(m.ID)
	if err != nil {
		return err
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	name := metaName(day, m.ID)
	if !m.End.IsZero() {
		name = endMetaName(day, m.ID)
	}
	ctx, cancel := b.ctx()
	defer cancel()
	_, err = b.c.NewBlockBlobClient(name).Upload(ctx, streaming.NopCloser(bytes.NewReader(append(js, '\n'))), &blockblob.UploadOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/json")},
	})
	return b.fail("write", name, err)
}

// endMetaName is the metadata blob written when a recording ends.
func endMetaName(day, id string) string { return day + "/" + id + ".end.json" }

// meta reads a recording's metadata: the end's if it was written, else
// the start's.
func (b *Blob) meta(day, id string, m *Meta) error {
	if err := b.readMeta(endMetaName(day, id), m); err == nil {
		return nil
	} else if !notFound(err) {
		return err
	}
	return b.readMeta(metaName(day, id), m)
}

// days lists the day prefixes ("2006-01-02") in the container.
func (b *Blob) days() ([]string, error) {
	var days []string
	ctx, cancel := b.ctx()
	defer cancel()
	pager := b.c.NewListBlobsHierarchyPager("/", nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, b.fail("list", "", err)
		}
		if page.Segment == nil {
			continue
		}
		for _, p := range page.Segment.BlobPrefixes {
			if p.Name == nil {
				continue
			}
			day := strings.TrimSuffix(*p.Name, "/")
			if _, err := time.Parse("2006-01-02", day); err == nil {
				days = append(days, day)
			}
		}
	}
	return days, nil
}

// names lists the blobs under a day's prefix.
func (b *Blob) names(day string) ([]string, error) {
	var names []string
	ctx, cancel := b.ctx()
	defer cancel()
	pager := b.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(day + "/")})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, b.fail("list", day+"/", err)
		}
		if page.Segment == nil {
			continue
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name != nil {
				names = append(names, *it.Name)
			}
		}
	}
	return names, nil
}

// parallel runs f(i) for i in [0, n), eight at a time.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

// List reads the metadata blobs of the days not before since's; those
// that cannot be read are skipped.
func (b *Blob) List(since time.Time) ([]Meta, error) {
	days, err := b.days()
	if err != nil {
		return nil, err
	}
	var metas []string
	for _, d := range days {
		day, _ := time.Parse("2006-01-02", d)
		if !since.IsZero() && day.Add(24*time.Hour).Before(since) {
			continue
		}
		names, err := b.names(d)
		if err != nil {
			return nil, err
		}
		ended := map[string]bool{}
		for _, n := range names {
			if strings.HasSuffix(n, ".end.json") {
				ended[strings.TrimSuffix(n, ".end.json")] = true
			}
		}
		for _, n := range names {
			switch {
			case strings.HasSuffix(n, ".end.json"):
				metas = append(metas, n)
			case strings.HasSuffix(n, ".json") && !ended[strings.TrimSuffix(n, ".json")]:
				metas = append(metas, n)
			}
		}
	}
	got := make([]*Meta, len(metas))
	parallel(len(metas), func(i int) {
		var m Meta
		if b.readMeta(metas[i], &m) == nil && ValidID(m.ID) {
			got[i] = &m
		}
	})
	var out []Meta
	for _, m := range got {
		if m != nil {
			out = append(out, *m)
		}
	}
	return out, nil
}

// readMeta reads and decodes a metadata blob (1 MiB at most).
func (b *Blob) readMeta(name string, m *Meta) error {
	ctx, cancel := b.ctx()
	defer cancel()
	resp, err := b.c.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		return b.fail("read", name, err)
	}
	defer resp.Body.Close()
	js, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return b.fail("read", name, err)
	}
	if err := json.Unmarshal(js, m); err != nil {
		return fmt.Errorf("recording blob: %s/%s: %w", b.name, name, err)
	}
	return nil
}

// openTimeout bounds reading a cast file back.
const openTimeout = 10 * time.Minute

// Open returns a reader of the recording's cast blob and its metadata,
// or ErrNotFound.
func (b *Blob) Open(id string) (io.ReadCloser, Meta, error) {
	day, err := dayOf(id)
	if err != nil {
		return nil, Meta{}, err
	}
	var m Meta
	if err := b.meta(day, id, &m); err != nil {
		if notFound(err) {
			return nil, Meta{}, ErrNotFound
		}
		return nil, Meta{}, err
	}
	name := castName(day, id)
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	resp, err := b.c.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		cancel()
		if notFound(err) {
			return nil, Meta{}, ErrNotFound
		}
		return nil, Meta{}, b.fail("read", name, err)
	}
	return &castReader{ReadCloser: resp.Body, cancel: cancel}, m, nil
}

// castReader is a cast blob's body; Close ends its request.
type castReader struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (r *castReader) Close() error {
	err := r.ReadCloser.Close()
	r.cancel()
	return err
}

// Writable writes a small probe blob and deletes it: two requests,
// proving the container is there and the gateway may write to it. A
// probe that cannot be deleted (an immutability policy) is left to the
// container's lifecycle rule: prefix .probe/.
func (b *Blob) Writable() error {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := ".probe/" + hex.EncodeToString(rnd[:])
	ctx, cancel := b.ctx()
	defer cancel()
	bb := b.c.NewBlockBlobClient(name)
	if _, err := bb.Upload(ctx, streaming.NopCloser(strings.NewReader("ok")), nil); err != nil {
		return b.fail("write", name, err)
	}
	_, _ = bb.Delete(ctx, nil)
	return nil
}

// Sweep deletes the blobs of the days before before's. In production a
// lifecycle management rule on the container (delete blobs some days
// after their last modification) does the same without the gateway.
func (b *Blob) Sweep(before time.Time) ([]string, error) {
	days, err := b.days()
	if err != nil {
		return nil, err
	}
	var gone []string
	var errs []error
	for _, d := range days {
		day, _ := time.Parse("2006-01-02", d)
		if !day.Add(24 * time.Hour).Before(before) {
			continue
		}
		names, err := b.names(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		failed := make([]error, len(names))
		parallel(len(names), func(i int) {
			ctx, cancel := b.ctx()
			defer cancel()
			if _, err := b.c.NewBlobClient(names[i]).Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)}); err != nil && !notFound(err) {
				failed[i] = b.fail("delete", names[i], err)
			}
		})
		if err := errors.Join(failed...); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, d)
	}
	return gone, errors.Join(errs...)
}

var _ Backend = (*Blob)(nil)
