package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
)

// RDPFiles writes .rdp files that open a user's node through the RD
// Gateway (gateway/rdg) with a token signed for them.
type RDPFiles interface {
	// RDPFile returns the file for user, opening node when not "", and
	// the ID of the token in it (for the log; the token itself is never
	// logged).
	RDPFile(user, node string) (file []byte, tokenID string, err error)
}

// ErrNoGatewayAddress is returned by RDPFiles when the gateway's public
// address is not configured (rdp.gateway.address).
var ErrNoGatewayAddress = errors.New("rdp.gateway.address is not set: .rdp files must name the gateway as users reach it")

// RDPFileRequest is the optional body of POST /api/users/{user}/rdp-file.
type RDPFileRequest struct {
	Node string `json:"node,omitempty"`
}

const msgNoRDG = "the RD Gateway is off on this gateway (rdp.gateway.enabled)"

// rdpFile answers an .rdp file for the user: write access, since its
// token opens the user's node (up to the node's own logon).
func (s *Server) rdpFile(w http.ResponseWriter, r *http.Request) {
	user, ok := userParam(w, r.PathValue("user"))
	if !ok {
		return
	}
	if s.rdpFiles == nil {
		writeError(w, http.StatusNotImplemented, msgNoRDG)
		return
	}
	var req RDPFileRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err != nil || (len(body) > 0 && json.Unmarshal(body, &req) != nil) {
		writeError(w, http.StatusBadRequest, `the body, when present, must be JSON: {"node": "node-3"}`)
		return
	}
	if req.Node != "" && !slices.ContainsFunc(s.pool.Nodes(), func(n balancer.NodeStatus) bool { return n.Name == req.Node }) {
		writeError(w, http.StatusNotFound, "no node named "+req.Node)
		return
	}
	file, id, err := s.rdpFiles.RDPFile(user, req.Node)
	switch {
	case errors.Is(err, ErrNoGatewayAddress):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info(".rdp file issued through the admin API", zap.String("user", user), zap.String("node", req.Node),
		zap.String("token_id", id), zap.String("client", r.RemoteAddr))
	w.Header().Set("Content-Type", "application/x-rdp")
	w.Header().Set("Content-Disposition", `attachment; filename="`+user+`.rdp"`)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(file)
}
