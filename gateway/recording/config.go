package recording

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// Config is the YAML section "recording". Off by default.
type Config struct {
	// Enabled turns recording on: every SSH session with a PTY is
	// recorded as an asciicast v2 file.
	Enabled bool `yaml:"enabled"`
	// Dir holds the recordings. Default state_dir/recordings (filled by
	// the app).
	Dir string `yaml:"dir"`
	// Keep deletes recordings older than this. 0 (default): kept until
	// ops delete them.
	Keep time.Duration `yaml:"keep"`
	// Input records what users type too. Off by default: what a user
	// types at a password prompt (sudo, a database client, read -s) is
	// echoed nowhere, so it appears in the output of no recording, but
	// it is in the input, and would be stored.
	Input bool `yaml:"input"`
	// ExecOutput records the output of commands run without a PTY (ssh
	// host cmd, scp, rsync, git) too. Off by default: their command line,
	// exit status and byte counts are in the audit log either way.
	ExecOutput bool `yaml:"exec_output"`
	// Required refuses new sessions while recordings cannot be written
	// (for teams whose policy says no session without a recording).
	// Default false: sessions go on, recordings are marked incomplete,
	// ops are told (log, metrics).
	Required bool `yaml:"required"`
	// AzureBlob, when set, keeps the recordings in an Azure Blob Storage
	// container (as the gateway's managed identity) instead of Dir.
	AzureBlob *BlobConfig `yaml:"azure_blob"`
	// BufferBytes bounds what one recording holds in memory while
	// storage is slow; past it events are dropped and the recording is
	// marked incomplete. Default 4 MiB.
	BufferBytes int `yaml:"buffer_bytes"`
}

// WithDefaults fills zero fields; stateDir gives the default Dir.
func (c Config) WithDefaults(stateDir string) Config {
	if c.Dir == "" && stateDir != "" {
		c.Dir = filepath.Join(stateDir, "recordings")
	}
	if c.BufferBytes == 0 {
		c.BufferBytes = 4 << 20
	}
	return c
}

// Validate reports every bad setting, naming its key.
func (c Config) Validate() error {
	var errs []error
	if c.Keep < 0 {
		errs = append(errs, fmt.Errorf("keep: must not be negative, got %s", c.Keep))
	}
	if c.Keep > 0 && c.Keep < time.Hour {
		errs = append(errs, fmt.Errorf("keep: %s is shorter than an hour", c.Keep))
	}
	if c.BufferBytes < 0 {
		errs = append(errs, fmt.Errorf("buffer_bytes: must not be negative, got %d", c.BufferBytes))
	}
	if c.Dir != "" && !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("dir: %q is not an absolute path", c.Dir))
	}
	if c.AzureBlob != nil {
		if err := c.AzureBlob.Validate(); err != nil {
			errs = append(errs, prefixed("azure_blob.", err)...)
		}
	}
	return errors.Join(errs...)
}

// prefixed puts prefix before each of err's joined errors.
func prefixed(prefix string, err error) []error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("%s%w", prefix, e)
	}
	return out
}
