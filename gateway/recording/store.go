// Package recording records SSH sessions as asciicast v2 files (the
// format asciinema, its web player and Teleport's converters read) with
// their metadata, without ever stalling a session: events go through a
// bounded buffer to a writer of their own, and a recording whose storage
// cannot keep up is marked incomplete.
package recording

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Meta is what a recording is about: its metadata file, and what ops
// search by.
type Meta struct {
	ID        string `json:"id"`
	SessionID uint64 `json:"session_id"`
	User      string `json:"user"`
	// Subject is the identity provider's subject when the session began
	// with a sign-in (a key bound by an earlier sign-in names none).
	Subject string `json:"subject,omitempty"`
	Node    string `json:"node"`
	Group   string `json:"group,omitempty"`
	Client  string `json:"client"`
	Gateway string `json:"gateway"`
	// Kind is "pty" (an interactive session) or "exec" (a command's
	// output, with recording.exec_output).
	Kind    string    `json:"kind"`
	Command string    `json:"command,omitempty"`
	Term    string    `json:"term,omitempty"`
	Width   int       `json:"width"`
	Height  int       `json:"height"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end,omitzero"`
	// Exit is the command's exit status, -1 when none came.
	Exit int   `json:"exit_status"`
	Size int64 `json:"size"` // bytes of the cast file
	// Input: keystrokes are in the recording (recording.input).
	Input bool `json:"input"`
	// Incomplete: events were dropped (storage too slow or failing) or
	// the gateway stopped before the session ended; Reason says which.
	Incomplete bool   `json:"incomplete"`
	Reason     string `json:"reason,omitempty"`
}

// Options are a Store's collaborators.
type Options struct {
	Logger *zap.Logger
	// Gateway names this gateway in the recordings' metadata.
	Gateway string
	// Metrics, when set, gets the recording families.
	Metrics prometheus.Registerer
	Now     func() time.Time
	// Backend, when set, stores the recordings (Azure Blob Storage);
	// nil: the directory recording.dir.
	Backend Backend
}

// Store writes recordings to a directory and reads them back.
type Store struct {
	cfg Config
	be  Backend
	log *zap.Logger
	gw  string
	now func() time.Time

	ended   *prometheus.CounterVec
	dropped prometheus.Counter

	mu       sync.Mutex
	checked  time.Time
	writeErr error
	swept    time.Time
}

// Open makes the directory and returns the store.
func Open(cfg Config, o Options) (*Store, error) {
	be := o.Backend
	if be == nil {
		if cfg.Dir == "" {
			return nil, errors.New("recording: no directory")
		}
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("recording.dir: %w", err)
		}
		be = Dir{Path: cfg.Dir}
	}
	s := &Store{cfg: cfg, be: be, log: o.Logger, gw: o.Gateway, now: o.Now}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.ended = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "poolgate_recordings_total",
		Help: "Session recordings ended, by result: complete, or incomplete (events dropped: storage slow or failing).",
	}, []string{"result"})
	s.ended.WithLabelValues("complete")
	s.ended.WithLabelValues("incomplete")
	s.dropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "poolgate_recording_dropped_bytes_total",
		Help: "Bytes of session output that recordings dropped because storage could not keep up.",
	})
	if o.Metrics != nil {
		o.Metrics.MustRegister(s.ended, s.dropped)
	}
	if err := s.Writable(); err != nil {
		if cfg.Required {
			return nil, fmt.Errorf("recording: recording.required, and recordings cannot be written: %w", err)
		}
		s.log.Warn("recordings cannot be written now; sessions go on, their recordings marked incomplete, until storage answers", zap.Error(err))
	}
	return s, nil
}

// Config is the store's configuration.
func (s *Store) Config() Config { return s.cfg }

// Writable reports whether recordings can be written now (checked at
// most every five seconds): recording.required refuses sessions while it
// fails.
func (s *Store) Writable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); now.Sub(s.checked) > 5*time.Second {
		s.checked = now
		err := s.be.Writable()
		s.writeErr = err
	}
	return s.writeErr
}

// idPattern is what recording IDs look like (and all that Open takes).
var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[a-z0-9_.@-]{1,64}-[0-9a-f]{8}$`)

// ValidID reports whether id could name a recording.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Start begins a recording described by m (ID, Start and Gateway are
// filled in). A recording that cannot be created is returned nil, with
// the error: the session goes on unrecorded unless recording.required.
func (s *Store) Start(m Meta) (*Recording, error) {
	now := s.now()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	m.ID = now.UTC().Format("20060102T150405Z") + "-" + m.User + "-" + hex.EncodeToString(rnd[:])
	if !ValidID(m.ID) {
		return nil, fmt.Errorf("recording: bad user name %q", m.User)
	}
	m.Start, m.Gateway, m.Exit, m.Input = now, s.gw, -1, s.cfg.Input
	if m.Width <= 0 {
		m.Width = 80
	}
	if m.Height <= 0 {
		m.Height = 24
	}
	go s.maybeSweep(now) // a blob store deletes one request per blob
	sink, err := s.be.Create(m)
	if err != nil {
		return nil, err
	}
	r := &Recording{s: s, out: sink, w: bufio.NewWriterSize(sink, 64<<10), meta: m,
		events: make(chan event, 1024), done: make(chan struct{}), start: now}
	hdr := map[string]any{"version": 2, "width": m.Width, "height": m.Height, "timestamp": now.Unix()}
	if m.Term != "" {
		hdr["env"] = map[string]string{"TERM": m.Term}
	}
	if m.Command != "" {
		hdr["command"] = m.Command
	}
	hdr["title"] = fmt.Sprintf("%s on %s", m.User, m.Node)
	b, _ := json.Marshal(hdr)
	_, err = r.w.Write(append(b, '\n'))
	if err == nil {
		err = r.w.Flush()
	}
	if err == nil {
		err = sink.Sync()
	}
	if err == nil {
		err = r.writeMeta()
	}
	if err != nil {
		_, _ = sink.Close()
		return nil, err
	}
	go r.run()
	return r, nil
}

// event is one asciicast event: output "o", input "i" or resize "r".
type event struct {
	at   time.Duration
	kind byte
	data []byte
}

// Recording is one session being recorded. Its methods never block on
// storage.
type Recording struct {
	s     *Store
	out   Sink
	w     *bufio.Writer
	meta  Meta
	start time.Time

	events   chan event
	queued   atomic.Int64 // bytes in events
	done     chan struct{}
	sendMu   sync.Mutex // serialises sends on events with its close
	finished bool       // events is closed; under sendMu
	mu       sync.Mutex // protects meta's end fields, pending and closed
	pending  [2][]byte  // an incomplete UTF-8 sequence at the end of the last output/input
	closed   bool
	dropped  atomic.Bool
	why      atomic.Pointer[string]
}

// ID names the recording.
func (r *Recording) ID() string { return r.meta.ID }

// Output records what the session printed.
func (r *Recording) Output(p []byte) { r.data('o', p) }

// Input records what the user typed (only with recording.input).
func (r *Recording) Input(p []byte) {
	if r.s.cfg.Input {
		r.data('i', p)
	}
}

// Resize records the terminal's new size.
func (r *Recording) Resize(cols, rows int) {
	r.push(event{kind: 'r', data: []byte(strconv.Itoa(cols) + "x" + strconv.Itoa(rows))})
}

func (r *Recording) data(kind byte, p []byte) {
	if len(p) == 0 {
		return
	}
	i := 0
	if kind == 'i' {
		i = 1
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	// Events are JSON strings: a UTF-8 sequence cut between two reads
	// waits for its end.
	buf := append(append([]byte(nil), r.pending[i]...), p...)
	cut := len(buf)
	for back := 1; back <= 3 && back <= len(buf); back++ {
		c := buf[len(buf)-back]
		if c < 0x80 {
			break
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(buf[len(buf)-back:]) {
				cut = len(buf) - back
			}
			break
		}
	}
	r.pending[i] = append(r.pending[i][:0], buf[cut:]...)
	r.mu.Unlock()
	if cut > 0 {
		r.push(event{kind: kind, data: buf[:cut]})
	}
}

// push queues an event, or drops it (marking the recording incomplete)
// when the buffer is full.
func (r *Recording) push(e event) {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	if r.finished {
		return
	}
	e.at = r.s.now().Sub(r.start)
	n := int64(len(e.data))
	if r.queued.Add(n) > int64(r.s.cfg.BufferBytes) {
		r.queued.Add(-n)
		r.drop("storage too slow: events dropped", n)
		return
	}
	select {
	case r.events <- e:
	default:
		r.queued.Add(-n)
		r.drop("storage too slow: events dropped", n)
	}
}

func (r *Recording) drop(why string, n int64) {
	r.s.dropped.Add(float64(n))
	r.why.CompareAndSwap(nil, &why)
	if !r.dropped.Swap(true) {
		r.s.log.Warn("recording incomplete: output dropped", zap.String("recording", r.meta.ID), zap.String("reason", why))
	}
}

// run writes events as they come and flushes every two seconds, so a
// gateway that dies loses at most that much.
func (r *Recording) run() {
	defer close(r.done)
	flush := time.NewTicker(2 * time.Second)
	defer flush.Stop()
	failed := false
	var line []byte // reused: one event's line
	write := func(e event) {
		r.queued.Add(-int64(len(e.data)))
		if failed {
			r.drop("storage failing: events dropped", int64(len(e.data)))
			return
		}
		line = append(line[:0], '[')
		line = strconv.AppendFloat(line, e.at.Seconds(), 'f', 6, 64)
		line = append(line, `, "`...)
		line = append(line, e.kind)
		line = append(line, `", `...)
		line = appendJSONString(line, e.data)
		line = append(line, "]\n"...)
		if _, err := r.w.Write(line); err != nil {
			failed = true
			r.drop("storage failing: "+err.Error(), int64(len(e.data)))
		}
	}
	for {
		select {
		case e, ok := <-r.events:
			if !ok {
				if !failed {
					err := r.w.Flush()
					if err == nil {
						err = r.out.Sync()
					}
					if err != nil {
						r.drop("storage failing: "+err.Error(), 0)
					}
				}
				return
			}
			write(e)
		case <-flush.C:
			if failed {
				continue
			}
			err := r.w.Flush()
			if err == nil {
				err = r.out.Sync()
			}
			if err != nil {
				failed = true
				r.drop("storage failing: "+err.Error(), 0)
			}
		}
	}
}

// Finish ends the recording with the command's exit status (-1: none)
// and writes its metadata. It waits for the events queued to be written.
func (r *Recording) Finish(exit int) Meta {
	r.mu.Lock()
	if r.closed {
		m := r.meta
		r.mu.Unlock()
		return m
	}
	r.closed = true
	tails := r.pending
	r.mu.Unlock()
	for i, t := range tails {
		if len(t) > 0 {
			r.push(event{kind: "oi"[i], data: t})
		}
	}
	r.sendMu.Lock()
	r.finished = true
	close(r.events)
	r.sendMu.Unlock()
	<-r.done
	size, err := r.out.Close()
	if err != nil {
		r.drop("storage failing: "+err.Error(), 0)
	}
	r.mu.Lock()
	r.meta.End, r.meta.Exit, r.meta.Size = r.s.now(), exit, size
	if why := r.why.Load(); why != nil {
		r.meta.Incomplete, r.meta.Reason = true, *why
	}
	m := r.meta
	r.mu.Unlock()
	if err := r.writeMeta(); err != nil {
		r.s.log.Warn("recording metadata not written", zap.String("recording", m.ID), zap.Error(err))
	}
	result := "complete"
	if m.Incomplete {
		result = "incomplete"
	}
	r.s.ended.WithLabelValues(result).Inc()
	return m
}

// writeMeta writes the metadata file (replaced whole).
func (r *Recording) writeMeta() error {
	r.mu.Lock()
	m := r.meta
	r.mu.Unlock()
	if m.End.IsZero() {
		m.Incomplete, m.Reason = true, "in progress, or the gateway stopped before the session ended"
	}
	return r.s.be.PutMeta(m)
}

// Filter selects recordings for List.
type Filter struct {
	User, Node string
	Since      time.Time
}

// List returns the recordings' metadata, newest first.
func (s *Store) List(f Filter) ([]Meta, error) {
	all, err := s.be.List(f.Since)
	if err != nil {
		return nil, err
	}
	var out []Meta
	for _, m := range all {
		if (f.User != "" && m.User != f.User) || (f.Node != "" && m.Node != f.Node) || (!f.Since.IsZero() && m.Start.Before(f.Since)) {
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.After(out[j].Start) })
	return out, nil
}

// ErrNotFound: no recording has that ID.
var ErrNotFound = errors.New("no such recording")

// Open returns a recording's cast file and metadata.
func (s *Store) Open(id string) (io.ReadCloser, Meta, error) {
	if !ValidID(id) {
		return nil, Meta{}, ErrNotFound
	}
	return s.be.Open(id)
}

// maybeSweep deletes, at most once an hour, the days older than Keep.
func (s *Store) maybeSweep(now time.Time) {
	if s.cfg.Keep <= 0 {
		return
	}
	s.mu.Lock()
	if now.Sub(s.swept) < time.Hour {
		s.mu.Unlock()
		return
	}
	s.swept = now
	s.mu.Unlock()
	gone, err := s.be.Sweep(now.Add(-s.cfg.Keep))
	for _, d := range gone {
		s.log.Info("recordings past recording.keep deleted", zap.String("day", d))
	}
	if err != nil {
		s.log.Warn("recordings past recording.keep not all deleted", zap.Error(err))
	}
}

// appendJSONString appends b to dst as a JSON string: valid UTF-8 as it
// is, the characters JSON requires escaped, and each byte that is not
// UTF-8 as U+FFFD (as encoding/json does). It is the asciicast writer's
// hot path: no reflection, no HTML escaping, no copy of the runs that
// need none.
func appendJSONString(dst, b []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, b[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, b[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			// Valid JSON either way; escaped so that no line-oriented
			// reader of the cast mistakes them for a line end.
			dst = append(dst, b[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, b[start:]...)
	return append(dst, '"')
}
