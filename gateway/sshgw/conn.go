package sshgw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/netx"
	"github.com/poolgate/poolgate/internal/username"
)

// Messages users see as SSH banner lines. They are short, say what
// happened and what to do, and never reveal whether a login name exists.
const (
	msgNoKey       = "poolgate: none of the keys you offered is authorized for %s on this pool.\n"
	msgKeyRefused  = "poolgate: key %s is not authorized for %s on this pool; your other keys, if any, are tried next.\n"
	msgNoNode      = "poolgate: no node in the pool can take your session right now (none is running, or all are down, draining or full). Please try again in a few minutes.\n"
	msgKeysStart   = "poolgate: no node in the pool can take your session right now, and only a login with a key may start one here; log in with your key, or try again in a few minutes.\n"
	msgNodeDown    = "poolgate: could not reach node %s, and no other node can take your session; please try again in a few minutes.\n"
	msgNodeRefused = "poolgate: node %s refused the login for %s; ask your administrator to check that the node knows this user and trusts the gateway's CA.\n"
	msgRepinned    = "poolgate: node %s, where your sessions ran, is no longer available; you are now on node %s.\n"
	msgNodeKey     = "poolgate: node %s failed the gateway's host key check, so the login was stopped; please tell your administrator.\n"
	msgTooMany     = "poolgate: you already have %d connections open, the most allowed per user; close one and try again.\n"
	msgStarting    = "poolgate: no node in the pool is running, so one is being started for you. This usually takes 2 to 5 minutes; please keep this window open.\n"
	msgStillStart  = "poolgate: still starting a node (%s so far)...\n"
	msgStarted     = "poolgate: node %s has started; logging you in.\n"
	msgStartFailed = "poolgate: no node could be started for you in time. Please try again in a few minutes, or tell your administrator.\n"
	msgBusy        = "poolgate: the pool is busy: node %s is loaded and a new node is starting; your session opens there now.\n"
	msgCAFailed    = "poolgate: the gateway could not sign your login to the node (its certificate authority did not answer in time); please try again in a minute, or tell your administrator if this goes on.\n"
)

// How a user waiting for a starting node is kept: Acquire is retried every
// startPollEvery, and a progress line sent every startNoteEvery (which
// also finds a client that has gone away).
var (
	startPollEvery = time.Second
	startNoteEvery = 20 * time.Second
)

// restrictionsKey is the Permissions.ExtraData key under which
// PublicKeyCallback hands the key's restrictions to
// VerifiedPublicKeyCallback.
type restrictionsKey struct{}

// clientConn is one user connection during and after authentication.
type clientConn struct {
	s      *Server
	cfg    *Config // the settings in force when the connection came (SetConfig)
	nc     net.Conn
	client string
	log    *zap.Logger

	// Set during the handshake, which runs in one goroutine.
	pre          ssh.ServerPreAuthConn
	keysRejected bool
	signInOver   bool // a sign-in failed for good in this connection
	bannersSent  map[string]bool
	chosen       string    // the node named at login (alice+node-3), "" if none
	subject      string    // the identity provider's subject, when this login signed in
	node         *nodeConn // the node login, once authentication succeeded
}

// nodeConn is the gateway's login to a node for one user connection.
type nodeConn struct {
	lease *balancer.Lease
	conn  ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
	// broken is set when reading from the node's TCP connection fails,
	// before x/crypto ends the channels with what looks like a clean EOF.
	broken atomic.Bool
}

// watchedConn records a failed read on the node connection.
type watchedConn struct {
	net.Conn
	broken *atomic.Bool
}

func (w watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.broken.Store(true)
	}
	return n, err
}

// handle serves one accepted connection (already wrapped by Serve), which
// holds a pre-auth slot until its handshake ends: then it calls release.
func (s *Server) handle(nc net.Conn, release func()) {
	defer nc.Close()
	c := &clientConn{s: s, cfg: s.live.Load(), nc: nc, client: nc.RemoteAddr().String(), bannersSent: map[string]bool{}}
	c.log = s.log.With(zap.String("client", c.client))
	_ = nc.SetDeadline(s.now().Add(c.cfg.LoginGraceTime))
	sconn, chans, reqs, err := ssh.NewServerConn(&versionGate{Conn: nc}, c.serverConfig())
	release()
	if err != nil {
		if c.node != nil { // authenticated, then the connection failed
			c.node.conn.Close()
			c.node.lease.Abort()
		} else {
			s.preauth.failed(c.client, preauthReason(err), err)
		}
		c.log.Debug("ssh handshake ended", zap.Error(err))
		return
	}
	_ = nc.SetDeadline(time.Time{})
	c.relay(sconn, chans, reqs)
}

// preauthReason names why a connection ended before authentication, for
// the log.
func preauthReason(err error) string {
	var ne net.Error
	var auth *ssh.ServerAuthError
	switch {
	case errors.Is(err, errBadVersion):
		return "not an SSH-2.0 client"
	case errors.As(err, &ne) && ne.Timeout():
		return "login grace time passed"
	case errors.As(err, &auth):
		return "authentication failed"
	case errors.Is(err, io.EOF):
		return "client closed the connection"
	default:
		return "handshake failed"
	}
}

func (c *clientConn) serverConfig() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		Config:                    c.cfg.Algorithms.config(),
		MaxAuthTries:              c.cfg.MaxAuthTries,
		ServerVersion:             "SSH-2.0-poolgate",
		PreAuthConnCallback:       func(p ssh.ServerPreAuthConn) { c.pre = p },
		PublicKeyCallback:         c.checkKey,
		VerifiedPublicKeyCallback: c.keyVerified,
		// keyboard-interactive comes after publickey in OpenSSH's order,
		// so it is where a user whose keys were all refused hears why;
		// with password pass-through it also asks for the password.
		KeyboardInteractiveCallback: c.keyboardInteractive,
		AuthLogCallback:             c.authLog,
	}
	if c.cfg.PasswordPassthrough {
		cfg.PasswordCallback = c.password
	}
	cfg.AddHostKey(c.s.keys.HostKey)
	return cfg
}

// banner sends msg to the user once per connection.
func (c *clientConn) banner(msg string) {
	if c.pre == nil || c.bannersSent[msg] {
		return
	}
	c.bannersSent[msg] = true
	_ = c.pre.SendAuthBanner(msg)
}

// checkKey decides whether key may log in as the user. It may be called
// for keys the client never proves it holds, so it only looks.
func (c *clientConn) checkKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	user := c.who(meta)
	if err := checkUser(user); err != nil {
		c.keyRefused(user, key)
		return nil, err
	}
	r, err := findKey(c.cfg.AuthorizedKeys.Path(user), key, meta.RemoteAddr(), c.s.now())
	if err != nil && c.s.identity != nil && errors.Is(err, os.ErrNotExist) && c.s.keyStore.check() == nil {
		// No authorized_keys file: the user signs in with the identity
		// provider. A key bound by an earlier sign-in goes straight in;
		// any other key is proven first, then bound after the sign-in.
		if c.boundKey(user, key) {
			return &ssh.Permissions{ExtraData: map[any]any{restrictionsKey{}: restrictions{}}}, nil
		}
		return &ssh.Permissions{ExtraData: map[any]any{needSignIn{}: true}}, nil
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || c.s.keyStore.isDown() {
			if kerr := c.s.keyStore.check(); kerr != nil {
				c.keysRejected = true
				c.banner(msgKeysUnavailable)
				return nil, kerr
			}
		}
		c.keyRefused(user, key)
		return nil, err
	}
	perms := &ssh.Permissions{ExtraData: map[any]any{restrictionsKey{}: r}}
	if r.noTouchRequired {
		perms.Extensions = map[string]string{"no-touch-required": ""}
	}
	return perms, nil
}

// keyRefused tells the user, once per connection, that a key was refused:
// a client that offers keys only (ssh -o BatchMode=yes, git) would
// otherwise see a bare "Permission denied". The line is the same for a
// user that does not exist, so it tells nothing about who does.
func (c *clientConn) keyRefused(user string, key ssh.PublicKey) {
	if !c.keysRejected {
		c.banner(fmt.Sprintf(msgKeyRefused, ssh.FingerprintSHA256(key), safeUser(user)))
	}
	c.keysRejected = true
}

// keyVerified runs once the client has proven it holds an authorized key:
// the user is known, so the node is chosen and logged in to now.
func (c *clientConn) keyVerified(meta ssh.ConnMetadata, key ssh.PublicKey, perms *ssh.Permissions, _ string) (*ssh.Permissions, error) {
	if perms.ExtraData[needSignIn{}] != nil {
		return nil, c.signInNext(key)
	}
	r, _ := perms.ExtraData[restrictionsKey{}].(restrictions)
	user := c.who(meta)
	keyID := fmt.Sprintf("poolgate:%s:%s", user, ssh.FingerprintSHA256(key))
	err := c.login(meta, func() (ssh.AuthMethod, error) {
		signer, err := c.s.certs.issue(user, keyID, r)
		if err != nil {
			return nil, err
		}
		return ssh.PublicKeys(signer), nil
	})
	if err != nil {
		return nil, err
	}
	return perms, nil
}

// keyboardInteractive signs the user in with the identity provider when
// one is configured; else it asks for the password when pass-through is
// on, and otherwise only tells a user whose keys were refused why.
func (c *clientConn) keyboardInteractive(meta ssh.ConnMetadata, challenge ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	if c.s.identity != nil {
		return c.signIn(meta, challenge, nil) // a client with no key signs in each time
	}
	user := c.who(meta)
	if !c.cfg.PasswordPassthrough {
		return nil, &ssh.BannerError{Err: ErrKeyNotAllowed, Message: fmt.Sprintf(msgNoKey, safeUser(user))}
	}
	if c.keysRejected {
		c.banner(fmt.Sprintf(msgNoKey, safeUser(user)))
	}
	answers, err := challenge("", "", []string{"Password: "}, []bool{false}) // no name: OpenSSH prints it on a line of its own
	if err != nil {
		return nil, err
	}
	if len(answers) != 1 {
		return nil, errors.New("expected one answer")
	}
	return c.password(meta, []byte(answers[0]))
}

// password passes the password to the chosen node, which verifies it.
func (c *clientConn) password(meta ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
	user := c.who(meta)
	if err := checkUser(user); err != nil {
		return nil, err
	}
	pw := string(password)
	err := c.login(meta, func() (ssh.AuthMethod, error) {
		return ssh.RetryableAuthMethod(ssh.KeyboardInteractive(func(_, _ string, questions []string, echos []bool) ([]string, error) {
			answers := make([]string, len(questions))
			for i := range questions {
				if !echos[i] {
					answers[i] = pw
				}
			}
			return answers, nil
		}), 1), nil
	}, ssh.Password(pw))
	if err != nil {
		return nil, err
	}
	return &ssh.Permissions{}, nil
}

// Errors behind refused logins, for logs and metrics.
var (
	// errNodeRefused marks a node's refusal of the credentials, as
	// opposed to the node being unreachable.
	errNodeRefused     = errors.New("node refused the login")
	errNodeUnreachable = errors.New("no reachable node")
	errSessionLimit    = errors.New("session limit reached")
)

// maxNodeTries is how many nodes one login tries when nodes cannot be
// reached (the health checks have not noticed yet).
const maxNodeTries = 3

// login logs the user in to a node with the auth methods (extra first,
// then the one auth builds) and keeps the node for the relay. A node that
// cannot be reached is avoided and the next one tried; a node that
// refuses the credentials or fails its host-key check ends the attempt.
// Failures come back as errors carrying the user's banner.
//
// A user whose key was verified is proven: the lease is taken first. A
// password is proven only by the node that accepts it, so a password
// login peeks at the node, logs in, and takes its lease (AcquireOn) only
// once the node said yes: a guess takes no lease, pin or count, and is
// told nothing about the user (not even the session limit).
func (c *clientConn) login(meta ssh.ConnMetadata, auth func() (ssh.AuthMethod, error), extra ...ssh.AuthMethod) error {
	user := c.who(meta)
	proven := len(extra) == 0
	if c.chosen != "" {
		if err := c.checkChoice(user); err != nil {
			return err
		}
	}
	if proven {
		if err := c.checkSessionLimit(user); err != nil {
			return err
		}
	}
	var avoid []string
	var method ssh.AuthMethod // made once: a signature costs a round trip when the CA is in Key Vault
	for {
		start := time.Now()
		p, err := c.place(user, proven, avoid)
		c.s.metrics.picked(time.Since(start).Seconds())
		if errors.Is(err, balancer.ErrNoNode) && len(avoid) == 0 && c.s.starter != nil && (proven || c.s.pwStarts != nil) {
			// Scale from zero: wait for a starting node, or refuse as usual.
			waited, started, werr := c.waitForStart(user, proven)
			if started && werr != nil {
				return werr
			}
			if started {
				p, err = waited, nil
			}
		}
		if errors.Is(err, balancer.ErrNoNode) {
			c.log.Info("ssh login refused: no node available", zap.String("user", user), zap.Strings("unreachable", avoid))
			if len(avoid) > 0 {
				return &ssh.BannerError{Err: fmt.Errorf("%w: %v", errNodeUnreachable, err), Message: fmt.Sprintf(msgNodeDown, strings.Join(avoid, ", "))}
			}
			if !proven && c.s.starter != nil && c.s.pwStarts == nil { // scale_from_zero: keys_only
				return &ssh.BannerError{Err: err, Message: msgKeysStart}
			}
			return &ssh.BannerError{Err: err, Message: msgNoNode}
		}
		if err != nil {
			return err
		}
		node := p.node
		log := c.log.With(zap.String("user", user), zap.String("node", node.Name))
		if method == nil {
			if method, err = auth(); err != nil {
				p.abort()
				if errors.Is(err, errSignLimit) {
					log.Info("ssh login refused: signature limit reached", zap.Error(err))
					return err
				}
				log.Error("ssh login refused: signing the node login certificate failed", zap.Error(err))
				return &ssh.BannerError{Err: err, Message: msgCAFailed}
			}
		}
		nc, err := c.dialNode(user, node, append(extra, method), nodeCiphers(meta, aesHardware, c.cfg.Algorithms.Ciphers))
		if err == nil {
			if p.lease == nil { // the node accepted the password: now the user counts
				by := balancer.ByBalancer
				if c.chosen != "" {
					by = balancer.ByUser
				}
				if p.lease, err = c.takeOn(user, node, nc, by); err != nil {
					return err
				}
			}
			nc.lease = p.lease
			if prev := p.lease.Repinned(); prev != "" {
				c.banner(fmt.Sprintf(msgRepinned, prev, node.Name))
			}
			if c.s.busy != nil && c.s.busy(node.Name) {
				c.banner(fmt.Sprintf(msgBusy, node.Name))
			}
			c.node = nc
			return nil
		}
		p.abort()
		switch {
		case errors.Is(err, errNodeRefused):
			log.Info("node refused the login", zap.Error(err))
			if !proven { // password: the node's verdict; the client may retry
				c.s.refusals.observe(time.Since(start))
				return err
			}
			return &ssh.BannerError{Err: err, Message: fmt.Sprintf(msgNodeRefused, node.Name, safeUser(user))}
		case errors.Is(err, ErrHostKeyChanged):
			log.Error("node host key changed; login refused", zap.Error(err))
			return &ssh.BannerError{Err: err, Message: fmt.Sprintf(msgNodeKey, node.Name)}
		}
		c.s.bal.NodeFailed(node.Name, balancer.SSH)
		avoid = append(avoid, node.Name)
		if len(avoid) >= maxNodeTries {
			log.Error("node login failed; giving up", zap.Error(err), zap.Strings("tried", avoid))
			return &ssh.BannerError{Err: fmt.Errorf("%w: %v", errNodeUnreachable, err), Message: fmt.Sprintf(msgNodeDown, strings.Join(avoid, ", "))}
		}
		log.Warn("node login failed; trying another node", zap.Error(err))
	}
}

// checkSessionLimit refuses a proven user who has max_sessions_per_user
// connections open.
func (c *clientConn) checkSessionLimit(user string) error {
	if max := c.cfg.MaxSessionsPerUser; max > 0 && c.s.bal.UserSessions(user) >= max {
		c.log.Info("ssh login refused: session limit", zap.String("user", user), zap.Int("limit", max))
		return &ssh.BannerError{Err: errSessionLimit, Message: fmt.Sprintf(msgTooMany, max)}
	}
	return nil
}

// placement is where a login goes: a node, and the lease on it for a
// proven user (nil until a password is accepted).
type placement struct {
	node  balancer.Node
	lease *balancer.Lease
}

// abort gives back a lease whose session never started.
func (p placement) abort() {
	if p.lease != nil {
		p.lease.Abort()
	}
}

// place chooses the node: a lease for a proven user, a peek otherwise;
// on the node the user named, if any (no other node is tried then).
func (c *clientConn) place(user string, proven bool, avoid []string) (placement, error) {
	if c.chosen != "" {
		if len(avoid) > 0 { // the chosen node could not be reached
			return placement{}, balancer.ErrNoNode
		}
		if proven {
			l, err := c.s.bal.AcquireOn(user, balancer.SSH, c.client, c.chosen, balancer.ByUser)
			if err != nil {
				return placement{}, c.choiceRefused(user, err)
			}
			return placement{node: l.Node(), lease: l}, nil
		}
		for _, n := range c.s.bal.Choosable(user, balancer.SSH) {
			if n.Name == c.chosen {
				return placement{node: n}, nil
			}
		}
		return placement{}, c.choiceUnproven(user)
	}
	if proven {
		l, err := c.s.bal.Acquire(user, balancer.SSH, c.client, avoid...)
		if err != nil {
			return placement{}, err
		}
		return placement{node: l.Node(), lease: l}, nil
	}
	n, err := c.s.bal.Peek(user, balancer.SSH, avoid...)
	return placement{node: n}, err
}

// takeOn takes the lease of a user whose password node accepted: the
// session limit is checked now that the user is known, and the lease is
// taken on that node. On refusal the node login is closed.
func (c *clientConn) takeOn(user string, node balancer.Node, nc *nodeConn, by balancer.PinOrigin) (*balancer.Lease, error) {
	if err := c.checkSessionLimit(user); err != nil {
		nc.conn.Close()
		return nil, err
	}
	l, err := c.s.bal.AcquireOn(user, balancer.SSH, c.client, node.Name, by)
	if err != nil {
		nc.conn.Close()
		c.log.Info("ssh login refused: the node could no longer take the session", zap.String("user", user), zap.String("node", node.Name), zap.Error(err))
		return nil, &ssh.BannerError{Err: fmt.Errorf("%w: %v", balancer.ErrNoNode, err), Message: msgNoNode}
	}
	return l, nil
}

// waitForStart holds a user who found no node while the pool starts one
// (scale from zero): banner lines say so and show progress, and the
// placement is retried until it succeeds or the starter gives up. started
// is false when no node is coming (the caller refuses as usual); with
// started, either the placement or the error for the user is set. The
// starter starts a node at most once per start timeout, however many
// logins wait. A password login, which nothing has proven yet, gets here
// only within the server's PasswordStarts bounds (else no node is
// coming), and waits for one start at most.
func (c *clientConn) waitForStart(user string, proven bool) (p placement, started bool, err error) {
	log := c.log.With(zap.String("user", safeUser(user)))
	give := func() {}
	if !proven {
		var ok bool
		if give, ok = c.s.pwStarts.take(netx.AddrKey(c.nc.RemoteAddr())); !ok {
			log.Info("password login may not start a node: too many recently, from this address or in all")
			return placement{}, false, nil
		}
	}
	until, ok := c.s.starter.StartNode()
	if !ok {
		give() // nothing started or waited for
		return placement{}, false, nil
	}
	if !proven {
		log.Info("password login, not yet proven, starts or waits for a node", zap.Time("until", until))
	}
	first := until // a password login waits no longer
	began := c.s.now()
	log.Info("no node running; user waits for one to start", zap.Time("until", until))
	c.banner(msgStarting)
	tick := time.NewTicker(startPollEvery)
	defer tick.Stop()
	lastNote := began
	for {
		// The login grace runs from now on, not from the connection.
		_ = c.nc.SetDeadline(until.Add(c.cfg.LoginGraceTime))
		select {
		case <-c.s.closing:
			return placement{}, true, &ssh.BannerError{Err: ErrServerClosed, Message: "poolgate: the gateway is shutting down; please reconnect in a moment.\n"}
		case <-tick.C:
		}
		pl, perr := c.place(user, proven, nil)
		if perr == nil {
			waited := c.s.now().Sub(began)
			log.Info("node started; user logging in", zap.String("node", pl.node.Name), zap.Duration("waited", waited))
			c.banner(fmt.Sprintf(msgStarted, pl.node.Name))
			_ = c.nc.SetDeadline(c.s.now().Add(c.cfg.LoginGraceTime))
			return pl, true, nil
		}
		if !errors.Is(perr, balancer.ErrNoNode) {
			return placement{}, true, perr
		}
		if !proven && !c.s.now().Before(first) {
			ok = false // not another start for an unproven login
		} else {
			until, ok = c.s.starter.StartNode()
		}
		if !ok {
			log.Info("ssh login refused: no node started in time", zap.Duration("waited", c.s.now().Sub(began)))
			return placement{}, true, &ssh.BannerError{Err: balancer.ErrNoNode, Message: msgStartFailed}
		}
		if now := c.s.now(); now.Sub(lastNote) >= startNoteEvery {
			lastNote = now
			if err := c.pre.SendAuthBanner(fmt.Sprintf(msgStillStart, now.Sub(began).Round(time.Second))); err != nil {
				log.Info("user left while waiting for a node", zap.Error(err))
				return placement{}, true, err
			}
		}
	}
}

// aesHardware reports whether this CPU has AES-GCM instructions.
var aesHardware = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ ||
	cpu.ARM64.HasAES && cpu.ARM64.HasPMULL ||
	cpu.S390X.HasAES && cpu.S390X.HasAESGCM

// nodeCiphers chooses the cipher preference toward the node, where the
// gateway is the client, from the configured ciphers. With AES
// instructions the configured order stands (AES-GCM first by default)
// whatever the user's client chose: x/crypto's
// chacha20-poly1305@openssh.com has no amd64 assembly and costs the
// gateway about 2.5 times the CPU per byte, so a client that chose it pays
// that on one leg, not two. Without AES instructions, the client's choice
// comes first: it is then the fast one for this machine too.
func nodeCiphers(meta ssh.ConnMetadata, aesHW bool, configured []string) []string {
	if aesHW {
		return configured
	}
	am, ok := meta.(ssh.AlgorithmsConnMetadata)
	if !ok {
		return configured
	}
	chosen := am.Algorithms().Read.Cipher
	if chosen == "" || !slices.Contains(configured, chosen) {
		return configured
	}
	out := []string{chosen}
	for _, c := range configured {
		if c != chosen {
			out = append(out, c)
		}
	}
	return out
}

// dialNode connects and logs in to node as user.
func (c *clientConn) dialNode(user string, node balancer.Node, auth []ssh.AuthMethod, ciphers []string) (*nodeConn, error) {
	timeout := c.cfg.UpstreamTimeout
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, err := c.s.dial(ctx, "tcp", node.SSH)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", node.SSH, err)
	}
	nc := newBatchConn(withQuickAck(raw))
	_ = nc.SetDeadline(c.s.now().Add(timeout))
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              auth,
		HostKeyCallback:   c.s.keys.KnownHosts.Callback(node.Name),
		HostKeyAlgorithms: c.s.keys.KnownHosts.Algorithms(node.Name),
		ClientVersion:     "SSH-2.0-poolgate",
		Config:            ssh.Config{KeyExchanges: c.cfg.Algorithms.KeyExchanges, Ciphers: ciphers, MACs: c.cfg.Algorithms.MACs},
		// The node's own banner (a legal notice, say) reaches the user.
		BannerCallback: func(msg string) error { c.banner(msg); return nil },
	}
	n := &nodeConn{}
	conn, chans, reqs, err := ssh.NewClientConn(watchedConn{nc, &n.broken}, node.SSH, cfg)
	if err != nil {
		nc.Close()
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("%w: %v", errNodeRefused, err)
		}
		return nil, fmt.Errorf("logging in to %s: %w", node.SSH, err)
	}
	_ = nc.SetDeadline(time.Time{})
	n.conn, n.chans, n.reqs = conn, chans, reqs
	return n, nil
}

func (c *clientConn) authLog(meta ssh.ConnMetadata, method string, err error) {
	if err == nil || method == "none" {
		return
	}
	c.s.metrics.authFailed(method, failureReason(method, err))
	// Passwords are what gets guessed; unmatched key offers are routine
	// (an agent offers every key it holds) and are not counted.
	if method == "password" || method == "keyboard-interactive" {
		if d := c.s.backoff.failed(meta.RemoteAddr()); d > 0 {
			c.log.Debug("slowing down repeated login failures", zap.Duration("delay", d))
			time.Sleep(d)
		}
	}
	if ce := c.log.Check(zap.DebugLevel, "ssh auth attempt failed"); ce != nil {
		ce.Write(zap.String("user", safeUser(c.who(meta))), zap.String("method", method), zap.Error(err))
	}
}

// safeUser returns a login name fit for logs and messages: valid names as
// they are, anything else quoted.
func safeUser(user string) string {
	if username.Valid(user) {
		return user
	}
	return fmt.Sprintf("%q", user)
}
