package app

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/gateway/identity"
	"github.com/poolgate/poolgate/gateway/rdg"
	"github.com/poolgate/poolgate/internal/atomicfile"
)

// buildRDGateway makes, with rdp.gateway.enabled, the RD Gateway the
// HTTP front end serves at /remoteDesktopGateway/.
func (g *Gateway) buildRDGateway() error {
	cfg := g.cfg.RDP.Gateway
	if !cfg.Enabled {
		return nil
	}
	key, err := g.sharedKey("rdg:token_key", "rdg_token_key", "RD Gateway token")
	if err != nil {
		return err
	}
	srv, err := rdg.New(cfg, g.bal, &rdg.Signer{Key: key}, rdg.Options{Logger: g.log.Named("rdg"),
		Metrics: g.frontM.Front(balancer.RDP, gwmetrics.BadToken, gwmetrics.TargetRefused, gwmetrics.TooManyUnauthentic)})
	if err != nil {
		return fmt.Errorf("rdp.gateway.%w", err)
	}
	g.rdg = srv
	return nil
}

// stopRDGateway waits for the RD Gateway's tunnels until ctx ends, then
// closes those left (its listener is the HTTP front end's, stopped
// already).
func (g *Gateway) stopRDGateway(ctx context.Context) {
	if g.rdg == nil {
		return
	}
	if err := g.rdg.Drain(ctx); err != nil {
		g.log.Info("closed RD Gateway tunnels still open at the shutdown timeout", zap.Int("tunnels", g.rdg.Open()))
		_ = g.rdg.Close()
	}
}

// sharedKey is a signing key the gateways share: through Redis when they
// share state (the first one's, kept there under the pool's prefix), else
// kept in state_dir so that a restart keeps what it signed valid.
func (g *Gateway) sharedKey(redisKey, file, what string) ([]byte, error) {
	if g.shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rdb, key := g.shared.Client(), g.shared.Prefix()+redisKey
		fresh := base64.RawStdEncoding.EncodeToString(identity.NewWebKey())
		if err := rdb.SetNX(ctx, key, fresh, 0).Err(); err == nil {
			if v, err := rdb.Get(ctx, key).Result(); err == nil {
				if k, err := base64.RawStdEncoding.DecodeString(v); err == nil && len(k) >= 32 {
					return k, nil
				}
			}
		}
		g.log.Sugar().Warnf("could not share the %s key through Redis; what this gateway signs is good on this gateway only", what)
	}
	path := filepath.Join(g.cfg.StateDir, file)
	if k, err := os.ReadFile(path); err == nil && len(k) >= 32 {
		return k, nil
	}
	k := identity.NewWebKey()
	if err := atomicfile.Write(path, k, 0o600); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	return k, nil
}

// rdpFiles writes .rdp files for the admin API and the users' page.
type rdpFiles struct {
	srv *rdg.Server
}

// RDPFile implements admin.RDPFiles: the gateway as rdp.gateway.address
// names it.
func (f rdpFiles) RDPFile(user, node string) ([]byte, string, error) {
	addr := f.srv.Config().Address
	if addr == "" {
		return nil, "", admin.ErrNoGatewayAddress
	}
	return f.file(user, node, addr)
}

// file is the .rdp file for user through the gateway at addr.
func (f rdpFiles) file(user, node, addr string) ([]byte, string, error) {
	tok, claims, err := f.srv.Issue(user, node)
	if err != nil {
		return nil, "", err
	}
	target := f.srv.Config().Target
	if node != "" {
		target = node
	}
	b, err := rdg.File{Target: target, Gateway: addr, Token: tok, User: claims.User}.Bytes()
	return b, claims.ID, err
}
