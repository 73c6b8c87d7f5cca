package sshgw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
)

// Identity is the organisation's identity provider (Entra ID or any OIDC
// provider with the device flow, RFC 8628), for users who sign in instead
// of holding a key in an authorized_keys file. An error it returns that
// has a UserLine method gives the user's line (starting "poolgate: ");
// any other gets a general one.
type Identity interface {
	// StartSignIn asks the provider for a device code for login, on
	// behalf of client. It bounds the starts per address.
	StartSignIn(ctx context.Context, login string, client net.Addr) (DeviceCode, error)
	// BoundUser reports the user a key (its SHA256 fingerprint) was bound
	// to by an earlier sign-in, while the binding lasts.
	BoundUser(ctx context.Context, fingerprint string) (user string, ok bool)
	// BindKey binds a key proven in a signed-in connection to the user.
	BindKey(ctx context.Context, k BoundKey) error
}

// DeviceCode is one sign-in under way.
type DeviceCode interface {
	// Message is the provider's own words: where to sign in, and the code.
	Message() string
	// Expires is when the code stops working.
	Expires() time.Time
	// Wait polls the provider until the user signed in (or declined, or
	// the code expired, or ctx ended) and returns who they proved to be,
	// already checked against the allowed groups and the login name.
	Wait(ctx context.Context) (SignedIn, error)
}

// SignedIn is who a sign-in proved.
type SignedIn struct {
	User    string // the login name the token maps to (canonical)
	Subject string // the provider's subject, for logs
}

// BoundKey is a public key proven in a signed-in connection.
type BoundKey struct {
	User, Subject string
	Fingerprint   string // SHA256:...
	KeyType       string
	Client        string
}

// Lines a signing-in user sees when the provider gave none.
const (
	msgSignInFailed   = "poolgate: sign-in failed; try again later, or log in with a key the gateway knows.\n"
	msgSignedInAsElse = "poolgate: you signed in as %s, so you cannot log in as %s here; log in as %s.\n"
)

// signInLine is the user's line for a failed sign-in.
func signInLine(err error) string {
	var l interface{ UserLine() string }
	if errors.As(err, &l) {
		return strings.TrimSuffix(l.UserLine(), "\n") + "\n"
	}
	return msgSignInFailed
}

// signInStart bounds the call that asks the provider for a code.
var signInStart = 20 * time.Second

// needSignIn marks, in Permissions.ExtraData, a key that no
// authorized_keys entry or binding allows: the client proves it holds it,
// then signs in, and the key is bound.
type needSignIn struct{}

// errSignInOver refuses further keyboard-interactive rounds once a sign-in
// in this connection has failed for good: the client's retries would
// otherwise each start a new code.
var errSignInOver = errors.New("sign-in already failed in this connection")

// boundKey looks for an earlier sign-in's binding of key to user.
func (c *clientConn) boundKey(user string, key ssh.PublicKey) bool {
	if c.s.identity == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), signInStart)
	defer cancel()
	bound, ok := c.s.identity.BoundUser(ctx, ssh.FingerprintSHA256(key))
	return ok && bound == user
}

// signInNext is the partial success after a key nobody knows was proven:
// the user signs in next, and the key is bound to them.
func (c *clientConn) signInNext(key ssh.PublicKey) error {
	return &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{
		KeyboardInteractiveCallback: func(meta ssh.ConnMetadata, challenge ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			return c.signIn(meta, challenge, key)
		},
	}}
}

// signIn runs the device flow in a keyboard-interactive round: the
// provider's words are the round's instruction, and the gateway waits
// while the user signs in elsewhere. Nothing is taken before the sign-in
// is proven. key, if not nil, was proven in this connection and is bound
// to the user once they are in.
func (c *clientConn) signIn(meta ssh.ConnMetadata, challenge ssh.KeyboardInteractiveChallenge, key ssh.PublicKey) (*ssh.Permissions, error) {
	user := c.who(meta)
	if c.signInOver {
		return nil, errSignInOver
	}
	if err := checkUser(user); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), signInStart)
	code, err := c.s.identity.StartSignIn(ctx, user, c.nc.RemoteAddr())
	cancel()
	if err != nil {
		c.log.Warn("sign-in could not start", zap.String("user", safeUser(user)), zap.Error(err))
		return nil, c.signInRefused(err, signInLine(err))
	}
	// The login grace is extended for this connection alone, up to the
	// code's lifetime; it keeps its one pre-auth slot meanwhile.
	_ = c.nc.SetDeadline(code.Expires().Add(c.cfg.LoginGraceTime))
	if _, err := challenge("", code.Message(), nil, nil); err != nil {
		return nil, err
	}
	ctx, cancel = context.WithDeadline(context.Background(), code.Expires())
	defer cancel()
	go func() { // a gateway shutting down ends the wait
		select {
		case <-c.s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	who, err := code.Wait(ctx)
	if err != nil {
		c.log.Info("sign-in refused", zap.String("user", safeUser(user)), zap.Error(err))
		return nil, c.signInRefused(err, signInLine(err))
	}
	if who.User != user {
		c.log.Info("sign-in refused: login name is not the signed-in user's",
			zap.String("user", safeUser(user)), zap.String("signed_in_as", who.User), zap.String("subject", who.Subject))
		return nil, c.signInRefused(errors.New("signed in as another user"), fmt.Sprintf(msgSignedInAsElse, who.User, safeUser(user), who.User))
	}
	c.log.Info("signed in", zap.String("user", user), zap.String("subject", who.Subject), zap.Bool("key_bound", key != nil))
	c.subject = who.Subject
	keyID := fmt.Sprintf("poolgate:%s:signin:%s", user, who.Subject)
	if key != nil {
		keyID = fmt.Sprintf("poolgate:%s:%s", user, ssh.FingerprintSHA256(key))
	}
	_ = c.nc.SetDeadline(c.s.now().Add(c.cfg.LoginGraceTime))
	err = c.login(meta, func() (ssh.AuthMethod, error) {
		signer, err := c.s.certs.issue(user, keyID, restrictions{})
		if err != nil {
			return nil, err
		}
		return ssh.PublicKeys(signer), nil
	})
	if err != nil {
		// The sign-in held, the login did not (the node refused, no node
		// could take it): a retry would only ask for another sign-in.
		c.signInOver = true
		return nil, err
	}
	if key != nil {
		bctx, cancel := context.WithTimeout(context.Background(), signInStart)
		defer cancel()
		b := BoundKey{User: user, Subject: who.Subject, Fingerprint: ssh.FingerprintSHA256(key), KeyType: key.Type(), Client: c.client}
		if err := c.s.identity.BindKey(bctx, b); err != nil {
			// The user is in; their next connection signs in again.
			c.log.Warn("could not bind the signed-in key", zap.String("user", user), zap.String("fingerprint", b.Fingerprint), zap.Error(err))
		}
	}
	return &ssh.Permissions{}, nil
}

// signInRefused ends the sign-in for this connection with the user's line.
func (c *clientConn) signInRefused(err error, msg string) error {
	c.signInOver = true
	return &ssh.BannerError{Err: err, Message: msg}
}
