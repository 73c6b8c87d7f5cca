package admin

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/gateway/recording"
	"github.com/poolgate/poolgate/internal/username"
)

// Recordings is what the API needs of the session recordings
// (recording.Store).
type Recordings interface {
	List(recording.Filter) ([]recording.Meta, error)
	Open(id string) (io.ReadCloser, recording.Meta, error)
}

// RecordingsJSON is the answer of GET /api/recordings.
type RecordingsJSON struct {
	Recordings []recording.Meta `json:"recordings"`
}

const msgNoRecording = "session recording is off on this gateway (recording.enabled)"

// ops wraps a GET endpoint that only ops may use: the write token, or the
// dashboard's sign-in with write access (identity.ops_groups). Session
// recordings show what users did; the read token does not open them.
func (s *Server) ops(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch s.accessOf(r) {
		case noAccess:
			s.unauthorized(w)
			return
		case readAccess:
			writeError(w, http.StatusForbidden, "recordings are for ops: use the token from token_file, or sign in as a member of identity.ops_groups")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use GET")
			return
		}
		h(w, r)
	}
}

// recordings lists the recordings: ?user=, ?node=, ?since= (RFC 3339, or
// a duration back from now such as 24h).
func (s *Server) recordings(w http.ResponseWriter, r *http.Request) {
	if s.recs == nil {
		writeError(w, http.StatusNotImplemented, msgNoRecording)
		return
	}
	q := r.URL.Query()
	var f recording.Filter
	if u := q.Get("user"); u != "" {
		c, err := username.Canonical(u)
		if err != nil {
			writeError(w, http.StatusBadRequest, "user: "+err.Error())
			return
		}
		f.User = c
	}
	f.Node = q.Get("node")
	if v := q.Get("since"); v != "" {
		t, err := parseSince(v, time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, "since: want a time such as 2026-12-08T09:00:00Z or a duration back from now such as 24h")
			return
		}
		f.Since = t
	}
	list, err := s.recs.List(f)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "could not read the recordings: "+err.Error())
		return
	}
	if list == nil {
		list = []recording.Meta{}
	}
	s.log.Info("recordings listed through the admin API", zap.String("client", r.RemoteAddr), zap.String("by", s.who(r)),
		zap.String("user", f.User), zap.String("node", f.Node), zap.Int("count", len(list)))
	writeJSON(w, http.StatusOK, RecordingsJSON{Recordings: list})
}

// parseSince reads an RFC 3339 time or a duration back from now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, errors.New("bad since")
	}
	return now.Add(-d), nil
}

// recordingFile answers one recording's asciicast file; who watched which
// recording is logged.
func (s *Server) recordingFile(w http.ResponseWriter, r *http.Request) {
	if s.recs == nil {
		writeError(w, http.StatusNotImplemented, msgNoRecording)
		return
	}
	id := r.PathValue("id")
	f, m, err := s.recs.Open(id)
	if err != nil {
		writeError(w, http.StatusNotFound, "no recording "+strconv.Quote(id))
		return
	}
	defer f.Close()
	s.log.Info("recording played through the admin API", zap.String("recording", m.ID), zap.String("recorded_user", m.User),
		zap.String("client", r.RemoteAddr), zap.String("by", s.who(r)))
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Content-Disposition", `attachment; filename="`+m.ID+`.cast"`)
	w.Header().Set("Cache-Control", "no-store")
	if m.Incomplete {
		w.Header().Set("Poolgate-Recording-Incomplete", m.Reason)
	}
	_, _ = io.Copy(w, f)
}

// who names, for the log, how a request proved it may see recordings.
func (s *Server) who(r *http.Request) string {
	if _, ok := r.Header["Authorization"]; ok {
		return "token"
	}
	if _, err := r.Cookie(cookieName); err == nil {
		return "dashboard sign-in"
	}
	return "open (no token_file, loopback)"
}
