package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/username"
)

// PinJSON is one user's pin in GET /api/pins.
type PinJSON struct {
	User string `json:"user"`
	Node string `json:"node"`
	// By is who chose the node: "balancer", "user" (ssh alice+node-3) or
	// "ops" (POST /api/users/{user}/pin).
	By       string `json:"by"`
	Sessions int    `json:"sessions"`
	// Until is when the pin ends unless a session opens; absent while the
	// user has sessions.
	Until *time.Time `json:"until,omitempty"`
	// Elsewhere names nodes other than Node where the user still has
	// sessions: two gateways placed the user apart while the shared
	// state was unreachable, and Node is the pool's first choice.
	Elsewhere []string `json:"elsewhere,omitempty"`
}

// pinJSON is p on the wire.
func pinJSON(p balancer.PinInfo) PinJSON {
	pj := PinJSON{User: p.User, Node: p.Node, By: string(p.By), Sessions: p.Sessions, Elsewhere: p.Elsewhere}
	if !p.Until.IsZero() {
		u := p.Until.UTC()
		pj.Until = &u
	}
	return pj
}

// PinsJSON is the answer of GET /api/pins.
type PinsJSON struct {
	Pins []PinJSON `json:"pins"`
}

// PinRequest is the body of POST /api/users/{user}/pin.
type PinRequest struct {
	Node string `json:"node"`
}

func (s *Server) pins(w http.ResponseWriter, _ *http.Request) {
	out := PinsJSON{Pins: []PinJSON{}}
	for _, p := range s.pool.Pins() {
		out.Pins = append(out.Pins, pinJSON(p))
	}
	writeJSON(w, http.StatusOK, out)
}

// userParam returns a user name the request names (the path's {user},
// ?user=) in canonical form (internal/username), the form the front ends
// give the balancer: "Alice" is alice. A name the rule refuses is
// answered 400, with what is wrong with it, and ok is false.
func userParam(w http.ResponseWriter, name string) (user string, ok bool) {
	user, err := username.Canonical(name)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error()+"; name the user as they log in, e.g. alice")
		return "", false
	}
	return user, true
}

// pin moves a user's pin to a node: their next sessions go there.
func (s *Server) pin(w http.ResponseWriter, r *http.Request) {
	user, ok := userParam(w, r.PathValue("user"))
	if !ok {
		return
	}
	var req PinRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err != nil || json.Unmarshal(body, &req) != nil || req.Node == "" {
		writeError(w, http.StatusBadRequest, `the body must be JSON naming the node: {"node": "node-3"}`)
		return
	}
	switch err := s.pool.Pin(user, req.Node); {
	case errors.Is(err, balancer.ErrUnknownNode):
		writeError(w, http.StatusNotFound, "no node named "+req.Node)
		return
	case errors.Is(err, balancer.ErrNodeDown), errors.Is(err, balancer.ErrDraining):
		writeError(w, http.StatusConflict, err.Error()+": pin the user to a node that takes new users")
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("user pinned through the admin API", zap.String("user", user), zap.String("node", req.Node), zap.String("client", r.RemoteAddr))
	s.pinOf(w, user)
}

// unpin drops a user's pin: their next session is placed by load again.
func (s *Server) unpin(w http.ResponseWriter, r *http.Request) {
	user, ok := userParam(w, r.PathValue("user"))
	if !ok {
		return
	}
	if err := s.pool.Unpin(user); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("user unpinned through the admin API", zap.String("user", user), zap.String("client", r.RemoteAddr))
	writeJSON(w, http.StatusOK, PinJSON{User: user})
}

// pinOf answers with the user's pin as it stands.
func (s *Server) pinOf(w http.ResponseWriter, user string) {
	for _, p := range s.pool.Pins() {
		if p.User == user {
			writeJSON(w, http.StatusOK, pinJSON(p))
			return
		}
	}
	writeJSON(w, http.StatusOK, PinJSON{User: user})
}

// writeDelete is write for a DELETE endpoint: the same access and
// request checks, which write applies to POST.
func (s *Server) writeDelete(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		post := r.Clone(r.Context())
		post.Method = http.MethodPost
		s.write(func(w http.ResponseWriter, _ *http.Request) { h(w, r) })(w, post)
	}
}
