package sshgw

import (
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/gateway/recording"
)

// channelAudit watches one session channel of the client's, with
// recording on: it records a session with a PTY (and, with
// recording.exec_output, a command's output), and writes the audit
// lines of commands: what ran, how it ended, how many bytes moved.
type channelAudit struct {
	s   *session
	st  *recording.Store
	mu  sync.Mutex // protects the fields up to rec
	pty bool
	// term, cols and rows are the PTY the client asked for.
	term       string
	cols, rows int
	kind       string // "shell", "exec" or "subsystem" once started
	command    string
	began      time.Time
	rec        *recording.Recording // nil: not recorded
	sftp       *sftpAudit           // an sftp subsystem's files; nil otherwise

	in, out atomic.Int64 // bytes from the client, to the client
	exit    atomic.Int64
}

func newChannelAudit(s *session, st *recording.Store) *channelAudit {
	a := &channelAudit{s: s, st: st}
	a.exit.Store(-1)
	return a
}

// sshString reads an SSH string off b.
func sshString(b []byte) (string, []byte, bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return "", nil, false
	}
	return string(b[4 : 4+n]), b[4+n:], true
}

// request looks at a request of the client's on the channel before it is
// passed on.
func (a *channelAudit) request(r *ssh.Request) {
	switch r.Type {
	case "pty-req":
		term, rest, ok := sshString(r.Payload)
		if !ok || len(rest) < 8 {
			return
		}
		a.mu.Lock()
		a.pty, a.term = true, term
		a.cols, a.rows = int(binary.BigEndian.Uint32(rest)), int(binary.BigEndian.Uint32(rest[4:]))
		a.mu.Unlock()
	case "window-change":
		if len(r.Payload) < 8 {
			return
		}
		cols, rows := int(binary.BigEndian.Uint32(r.Payload)), int(binary.BigEndian.Uint32(r.Payload[4:]))
		a.mu.Lock()
		rec := a.rec
		a.cols, a.rows = cols, rows
		a.mu.Unlock()
		if rec != nil {
			rec.Resize(cols, rows)
		}
	case "shell":
		a.start("shell", "")
	case "exec":
		if cmd, _, ok := sshString(r.Payload); ok {
			a.start("exec", cmd)
		}
	case "subsystem":
		if name, _, ok := sshString(r.Payload); ok {
			a.start("subsystem", name)
		}
	}
}

// start notes what the channel runs and starts its recording.
func (a *channelAudit) start(kind, command string) {
	a.mu.Lock()
	if a.kind != "" {
		a.mu.Unlock()
		return
	}
	a.kind, a.command, a.began = kind, command, a.s.c.s.now()
	pty, term, cols, rows := a.pty, a.term, a.cols, a.rows
	a.mu.Unlock()
	lease := a.s.node.lease
	fields := []zap.Field{zap.String("kind", kind), zap.Bool("pty", pty)}
	if command != "" {
		fields = append(fields, zap.String("command", command))
	}
	if kind == "subsystem" && command == "sftp" {
		log := a.s.log
		sa := newSFTPAudit(func(f *sftpFile) {
			log.Info("sftp file", zap.String("path", f.Path), zap.String("direction", f.direction()),
				zap.Int64("bytes_read", f.Read), zap.Int64("bytes_written", f.Written))
		})
		a.mu.Lock()
		a.sftp = sa
		a.mu.Unlock()
	}
	record := pty || (kind == "exec" && a.st.Config().ExecOutput)
	if record {
		m := recording.Meta{SessionID: lease.ID(), User: lease.User(), Subject: a.s.c.subject, Node: lease.Node().Name, Client: a.s.c.client,
			Kind: "exec", Command: command, Term: term, Width: cols, Height: rows}
		if pty {
			m.Kind = "pty"
		}
		rec, err := a.st.Start(m)
		if err != nil {
			a.s.log.Warn("session not recorded: the recording could not be created", zap.Error(err))
		} else {
			a.mu.Lock()
			a.rec = rec
			a.mu.Unlock()
			fields = append(fields, zap.String("recording", rec.ID()))
		}
	}
	a.s.log.Info("ssh command started", fields...)
}

// current returns the channel's recording and sftp audit, nil when none.
func (a *channelAudit) current() (*recording.Recording, *sftpAudit) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rec, a.sftp
}

// finish ends the recording and writes the command's audit line.
func (a *channelAudit) finish() {
	a.mu.Lock()
	kind, command, began, rec, sa := a.kind, a.command, a.began, a.rec, a.sftp
	a.mu.Unlock()
	if kind == "" {
		return
	}
	if sa != nil {
		sa.finish()
	}
	exit := int(a.exit.Load())
	fields := []zap.Field{zap.String("kind", kind), zap.Int("exit_status", exit),
		zap.Int64("bytes_from_client", a.in.Load()), zap.Int64("bytes_to_client", a.out.Load()),
		zap.Duration("duration", a.s.c.s.now().Sub(began).Round(time.Millisecond))}
	if command != "" {
		fields = append(fields, zap.String("command", command))
	}
	if rec != nil {
		m := rec.Finish(exit)
		fields = append(fields, zap.String("recording", m.ID), zap.Int64("recording_size", m.Size))
		if m.Incomplete {
			fields = append(fields, zap.String("recording_incomplete", m.Reason))
		}
	}
	a.s.log.Info("ssh command ended", fields...)
}

// tap is a writer that passes what it writes to a channel's audit: the
// client's input, the node's output (stdout, or stderr, which an sftp
// audit does not read).
type tap struct {
	w      io.Writer
	a      *channelAudit
	input  bool
	stderr bool
}

func (t tap) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if n > 0 {
		rec, sa := t.a.current()
		if t.input {
			t.a.in.Add(int64(n))
			if rec != nil {
				rec.Input(p[:n])
			}
			if sa != nil {
				sa.fromClient(p[:n])
			}
		} else {
			t.a.out.Add(int64(n))
			if rec != nil {
				rec.Output(p[:n])
			}
			if sa != nil && !t.stderr {
				sa.fromNode(p[:n])
			}
		}
	}
	return n, err
}
