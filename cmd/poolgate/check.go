package main

import (
	"fmt"
	"io"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// cmdCheck validates a config file as serve would read it, with no side
// effects: no key is created, state_dir is not touched, and nothing is
// called on the network (no Azure, Key Vault or Redis). It prints every
// error at once, one "file:line: key: problem" per line, and exits 1; or
// the warnings and a one-line "ok" summary, and exits 0.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flags("check", stderr)
	configPath := fs.String("config", "", "config file (YAML; see docs/CONFIG.md)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *configPath == "" {
		fmt.Fprintln(stderr, "poolgate check: --config FILE is required")
		return 2
	}
	cfg, warnings, err := app.CheckConfigFile(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, warningLine(w))
	}
	fmt.Fprintf(stdout, "ok: %s: %s\n", *configPath, cfg.Summary())
	return 0
}

// warningLine is "file:line: warning: key: problem".
func warningLine(w *app.ConfigError) string {
	where := w.File
	if w.Line > 0 {
		where = fmt.Sprintf("%s:%d", w.File, w.Line)
	}
	return fmt.Sprintf("%s: warning: %s: %s", where, w.Key, w.Msg)
}
