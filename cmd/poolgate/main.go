package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	// Mozilla's CA roots, used only where the system has none (the
	// scratch container image), so that calls to Azure verify TLS.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

const usage = `poolgate: a session-aware SSH, JupyterHub and RDP gateway for a pool of shared VMs

Usage:
  poolgate serve --config FILE      run the gateway
  poolgate check --config FILE      check a config file without side effects: every error
                                    as file:line: key: problem (exit 1), or a one-line summary (exit 0)
  poolgate demo [--listen ADDR]     run the gateway with three in-process demo nodes
  poolgate ca-pubkey --config FILE  print the user CA line for the nodes' TrustedUserCAKeys
  poolgate nodes                    list the nodes with their state, sessions and users
  poolgate sessions [--node N] [--user U]
                                    list the live sessions
  poolgate drain NODE               stop sending new users to NODE (before scale-in)
  poolgate undrain NODE             let NODE take new users again
  poolgate pin USER NODE            send USER's next sessions to NODE
  poolgate unpin USER               place USER by load again
  poolgate identities [--user U]    list the keys bound to users by a sign-in (identity provider)
  poolgate identity revoke USER     forget USER's bound keys: their next connection signs in again
  poolgate rdp-file USER [--node N] [-o FILE]
                                    an .rdp file that opens USER's node through the RD Gateway
  poolgate recordings [--user U] [--node N] [--since T]
                                    list the session recordings (ops)
  poolgate play ID [--speed X]      replay a recording in this terminal (ops)
  poolgate scale-in --idle D [--keep N] [--dry-run]
                                    delete scale-set instances idle for D (Azure)
  poolgate version                  print the version

nodes, sessions, drain, undrain, pin, unpin, identities, identity, rdp-file, recordings, play and scale-in talk to a running gateway's admin API:
--admin URL (env POOLGATE_ADMIN, default http://127.0.0.1:9090),
--token T (env POOLGATE_TOKEN), --json for scripts.

Run 'poolgate COMMAND --help' for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(ctx, args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(ctx, args[1:], stdout, stderr)
	case "ca-pubkey":
		return cmdCAPubkey(args[1:], stdout, stderr)
	case "nodes":
		return cmdNodes(args[1:], stdout, stderr)
	case "sessions":
		return cmdSessions(args[1:], stdout, stderr)
	case "drain", "undrain":
		return cmdDrain(args[0], args[1:], stdout, stderr)
	case "pin":
		return cmdPin(args[1:], stdout, stderr)
	case "unpin":
		return cmdUnpin(args[1:], stdout, stderr)
	case "identities":
		return cmdIdentities(args[1:], stdout, stderr)
	case "identity":
		return cmdIdentity(args[1:], stdout, stderr)
	case "rdp-file":
		return cmdRDPFile(args[1:], stdout, stderr)
	case "recordings":
		return cmdRecordings(args[1:], stdout, stderr)
	case "play":
		return cmdPlay(ctx, args[1:], stdout, stderr)
	case "scale-in":
		return cmdScaleIn(args[1:], stdout, stderr)
	case "version", "--version":
		if code := parse(flags("version", stderr), args[1:]); code >= 0 {
			return code
		}
		fmt.Fprintln(stdout, "poolgate", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "poolgate: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// flags returns a flag set that reports errors to stderr; parse returns
// the exit status to use, or -1 to go on.
func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("poolgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if h, ok := helps[name]; ok {
		fs.Usage = func() {
			fmt.Fprintf(stderr, "Usage: %s\n\n%s\n", strings.TrimSpace(fs.Name()+" "+h.args), h.what)
			n := 0
			fs.VisitAll(func(*flag.Flag) { n++ })
			if n > 0 {
				fmt.Fprintln(stderr, "\nFlags:")
				fs.PrintDefaults()
			}
		}
	}
	return fs
}

// helps is each command's synopsis and what it does, for COMMAND --help.
var helps = map[string]struct{ args, what string }{
	"serve":      {"--config FILE", "Run the gateway (the config file's keys: docs/CONFIG.md). Check a file first with poolgate check.\nSignals: SIGHUP reloads the config file; SIGUSR2 upgrades to the binary now at the same path\n(it takes the listeners over, this process keeps its sessions until they end); SIGTERM stops,\ntelling SSH users (shutdown_timeout)."},
	"check":      {"--config FILE", "Check a config file as serve reads it, with no side effects (no key created, state_dir\nuntouched, no network). Prints every error, one file:line: key: problem a line, and\nexits 1; or warnings and a one-line summary of what would be served, and exits 0."},
	"demo":       {"[flags]", "Run the gateway with three in-process demo nodes and no config, printing how to connect."},
	"ca-pubkey":  {"--config FILE", "Print the gateway's SSH user CA public key (creating it in state_dir if missing):\nput this line in each node's TrustedUserCAKeys file."},
	"nodes":      {"[flags]", "List the nodes of a running gateway with their state, sessions, users and load."},
	"sessions":   {"[--node N] [--user U] [flags]", "List the live sessions of a running gateway."},
	"drain":      {"NODE [flags]", "Stop sending new users to NODE (before scale-in or maintenance). Users pinned to it\nmay still open sessions there; open sessions are never cut. Undo with poolgate undrain NODE."},
	"undrain":    {"NODE [flags]", "Let NODE take new users again."},
	"pin":        {"USER NODE [flags]", "Send USER's next sessions to NODE (open sessions stay where they are).\nA draining, down or unknown node is refused. Undo with poolgate unpin USER."},
	"unpin":      {"USER [flags]", "Forget USER's pin: their next session is placed by load (or stays with\ntheir live sessions' node while they have any)."},
	"rdp-file":   {"USER [--node N] [-o FILE] [flags]", "Write an .rdp file that opens USER's node through the RD Gateway (rdp.gateway), with a\ntoken the gateway signs for USER. Open it with mstsc or xfreerdp. Needs the admin write token\nand rdp.gateway.address."},
	"recordings": {"[--user U] [--node N] [--since T] [flags]", "List the session recordings of a running gateway, newest first (recording.enabled; the admin\nwrite token or a sign-in of identity.ops_groups). Listing is logged."},
	"play":       {"ID [--speed X] [--idle-limit D] [--raw] [flags]", "Replay a session recording in this terminal, with its timing. --raw writes the asciicast file\n(for asciinema play). Who played which recording is logged."},
	"version":    {"", "Print the version of this binary."},
}

func parse(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2
	}
	return -1
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flags("serve", stderr)
	configPath := fs.String("config", "", "config file (YAML; see docs/CONFIG.md)")
	logFormat := fs.String("log-format", "json", "log format: json or console")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	pprofAddr := fs.String("pprof", "", "serve Go's pprof profiles on this loopback address (e.g. 127.0.0.1:6060)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *configPath == "" {
		fmt.Fprintln(stderr, "poolgate serve: --config FILE is required")
		return 2
	}
	log, err := newLogger(*logFormat, *logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "poolgate serve:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	cfg, warnings, err := app.CheckConfigFile(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, "poolgate serve:", err)
		return 1
	}
	for _, w := range warnings {
		log.Warn("config: " + warningLine(w))
	}
	setGCPercent(log)
	exe, exeErr := startPath() // now: the file may be replaced before SIGUSR2
	in, err := inherit()
	if err != nil {
		fmt.Fprintln(stderr, "poolgate serve: upgrade:", err)
		return 1
	}
	opts := []app.Option{app.WithVersion(version)}
	if in != nil && cfg.State.Replica != "" {
		// The old process still holds its sessions in Redis under the
		// configured name until they end; this one must not share it.
		cfg.State.Replica = upgradeReplica(cfg.State.Replica, os.Getpid())
		log.Info("upgrade: sharing state under a name of this process's own while the old one ends its sessions", zap.String("replica", cfg.State.Replica))
	}
	if in != nil {
		opts = append(opts, app.WithListeners(in.listeners), app.WithHandover(in.state))
	}
	gw, err := app.New(cfg, log, opts...)
	if err != nil {
		if in != nil {
			in.ready.Close() // the old process serves on
		}
		fmt.Fprintf(stderr, "poolgate serve: %s: %v\n", *configPath, err)
		return 1
	}
	// systemd (Type=notify): this process is the service's main one now,
	// and ready; with an upgrade, before the old one exits.
	if err := sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())); err != nil {
		log.Warn("could not tell systemd this process is ready", zap.Error(err))
	}
	if in != nil {
		_, err := fmt.Fprintf(in.ready, "ready %d\n", os.Getpid())
		in.ready.Close()
		if err != nil {
			log.Error("upgrade: could not tell the old process this one is ready", zap.Error(err))
		}
	}
	if *pprofAddr != "" {
		stop, err := servePprof(*pprofAddr)
		if err != nil {
			fmt.Fprintln(stderr, "poolgate serve: --pprof:", err)
			return 2
		}
		defer stop()
		log.Info("pprof listening", zap.String("addr", *pprofAddr))
	}
	log.Info("poolgate started", zap.String("version", version), zap.String("ssh", gw.SSHAddr()), zap.String("http", gw.HTTPAddr()), zap.String("state_dir", cfg.StateDir))
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }()
	go func() {
		for range hup {
			next, err := app.LoadConfig(*configPath)
			if err != nil {
				log.Error("SIGHUP: the config file has errors, so none of it is applied; the running config stays", zap.Error(err))
				continue
			}
			r, err := gw.Reload(next)
			if err != nil {
				log.Error("SIGHUP: reload failed; the running config stays where not listed as applied", zap.Strings("applied", r.Applied), zap.Error(err))
				continue
			}
			log.Info("SIGHUP: reloaded", zap.Strings("applied", r.Applied), zap.Strings("needs_restart", r.NeedRestart))
		}
	}()
	hctx, hcancel := context.WithCancel(context.Background())
	up := &upgrader{exe: exe, args: os.Args[1:], log: log, gw: gw, handover: make(chan error, 1), ctx: hctx}
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer func() { signal.Stop(usr2); close(usr2) }()
	go func() {
		for range usr2 {
			if exeErr != nil {
				log.Error("upgrade: SIGUSR2 ignored: the path of this binary was not known at start", zap.Error(exeErr))
				continue
			}
			up.upgrade()
		}
	}()
	err = gw.Run(ctx)
	hcancel()
	up.wait()
	if err != nil {
		log.Error("poolgate stopped", zap.Error(err))
		return 1
	}
	return 0
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:2222", "address of the demo gateway")
	adminListen := fs.String("admin-listen", "127.0.0.1:9090", "address of the demo's admin API")
	httpListen := fs.String("http-listen", "127.0.0.1:8000", "address of the demo's HTTP gateway (for a browser)")
	stateDir := fs.String("state-dir", "", "where demo keys are kept (default: the user cache dir)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	log, _ := newLogger("console", "info", stderr)
	defer func() { _ = log.Sync() }()
	if err := app.RunDemo(ctx, app.DemoOptions{Listen: *listen, AdminListen: *adminListen, HTTPListen: *httpListen, StateDir: *stateDir, Out: stdout}, log); err != nil {
		fmt.Fprintln(stderr, "poolgate demo:", err)
		return 1
	}
	return 0
}

func cmdCAPubkey(args []string, stdout, stderr io.Writer) int {
	fs := flags("ca-pubkey", stderr)
	configPath := fs.String("config", "", "config file (only state_dir and ca are used)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *configPath == "" {
		fmt.Fprintln(stderr, "poolgate ca-pubkey: --config FILE is required")
		return 2
	}
	cfg, err := app.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, "poolgate ca-pubkey:", err)
		return 1
	}
	lines, err := app.CALines(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "poolgate ca-pubkey:", err)
		return 1
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return 0
}

// defaultGOGC is the garbage collector's target unless GOGC is set. A
// relay keeps a small live heap but allocates for every SSH packet (x/crypto
// copies each received packet into a new buffer); at Go's default of 100
// the collector ran dozens of times a second and cost 27% of the CPU per
// GiB relayed (docs/PERFORMANCE.md). 400 trades about 20 KiB per idle
// session for that. GOMEMLIMIT caps the heap if memory is tight.
const defaultGOGC = 400

func setGCPercent(log *zap.Logger) {
	if v := os.Getenv("GOGC"); v != "" {
		log.Info("garbage collector target from GOGC", zap.String("gogc", v))
		return
	}
	debug.SetGCPercent(defaultGOGC)
}

// servePprof serves net/http/pprof on a loopback address only: profiles
// show memory contents and must not be reachable from the network.
func servePprof(addr string) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%s is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

func newLogger(format, level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("--log-format: want json or console, got %q", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}
