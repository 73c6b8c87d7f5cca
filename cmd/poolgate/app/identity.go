package app

import (
	"context"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/gateway/httpgw"
	"github.com/poolgate/poolgate/gateway/identity"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

// signIn lends the identity provider and its key bindings to the SSH
// gateway (sshgw.Identity).
type signIn struct {
	p   *identity.Provider
	b   identity.Bindings
	log *zap.Logger
	now func() time.Time
}

// buildIdentity makes the provider and the bindings: in Redis when the
// gateways share state, so that a key bound through one gateway opens
// every other; else in this gateway's memory.
func (g *Gateway) buildIdentity() error {
	cfg := g.cfg.Identity
	if !cfg.Enabled() {
		return nil
	}
	p, err := identity.New(cfg, identity.Options{Logger: g.log.Named("identity")})
	if err != nil {
		return err
	}
	var b identity.Bindings = identity.NewMemoryBindings(nil)
	if g.shared != nil {
		b = identity.NewRedisBindings(g.shared.Client(), g.shared.Prefix()+"identity:", nil)
	}
	g.identity = &signIn{p: p, b: b, log: g.log.Named("identity"), now: time.Now}
	return nil
}

// webKey is the key that signs the users' page cookies. A sign-in begun
// through one gateway may come back through another, so gateways that
// share state share it through Redis (the first one's, kept there);
// alone, it is kept in state_dir so that a restart keeps users signed in.
func (g *Gateway) webKey() ([]byte, error) {
	return g.sharedKey("identity:web_key", "user_page_key", "users' page cookie")
}

// userPage is the users' page of the HTTP front end (/_poolgate/), on
// when identity is configured.
func (g *Gateway) userPage() (*httpgw.UserPage, error) {
	if g.identity == nil {
		return nil, nil
	}
	key, err := g.webKey()
	if err != nil {
		return nil, err
	}
	nc := g.cfg.SSH.NodeChoice
	up := &httpgw.UserPage{
		SignIn:       &identity.Web{Provider: g.identity.p, Name: "poolgate_user", Key: key},
		Bindings:     g.identity.b,
		SSHAddr:      g.cfg.SSH.Listen,
		NoNodeChoice: nc != nil && !*nc,
	}
	if g.rdg != nil {
		f := rdpFiles{g.rdg}
		up.RDGatewayAddress = g.rdg.Config().Address
		up.RDPFile = func(user, gateway string) ([]byte, string, error) { return f.file(user, "", gateway) }
	}
	return up, nil
}

func (s *signIn) StartSignIn(ctx context.Context, login string, client net.Addr) (sshgw.DeviceCode, error) {
	d, err := s.p.StartDevice(ctx, login, client)
	if err != nil {
		return nil, userLineError{err}
	}
	return deviceCode{d}, nil
}

func (s *signIn) BoundUser(ctx context.Context, fingerprint string) (string, bool) {
	b, ok, err := s.b.Lookup(ctx, fingerprint)
	if err != nil {
		s.log.Warn("could not read key bindings; the user signs in again", zap.String("fingerprint", fingerprint), zap.Error(err))
		return "", false
	}
	return b.User, ok
}

func (s *signIn) BindKey(ctx context.Context, k sshgw.BoundKey) error {
	now := s.now()
	return s.b.Bind(ctx, identity.Binding{
		User: k.User, Subject: k.Subject, Fingerprint: k.Fingerprint, KeyType: k.KeyType, Client: k.Client,
		Bound: now, Until: now.Add(s.p.Config().KeyTTL),
	})
}

// deviceCode is one device sign-in, as the SSH gateway sees it.
type deviceCode struct{ d *identity.DeviceSignIn }

func (c deviceCode) Message() string    { return c.d.Message }
func (c deviceCode) Expires() time.Time { return c.d.Expiry }
func (c deviceCode) Wait(ctx context.Context) (sshgw.SignedIn, error) {
	id, err := c.d.Wait(ctx)
	if err != nil {
		return sshgw.SignedIn{}, userLineError{err}
	}
	return sshgw.SignedIn{User: id.User, Subject: id.Subject}, nil
}

// userLineError gives a sign-in error the user's line.
type userLineError struct{ error }

func (e userLineError) Unwrap() error    { return e.error }
func (e userLineError) UserLine() string { return identity.UserMessage(e.error) }
