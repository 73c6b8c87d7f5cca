package redisstate_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
)

// TestRedisPasswordFromFile: state.password_file gives the password of a
// Redis that requires one, so that poolgate.yaml holds no secret.
func TestRedisPasswordFromFile(t *testing.T) {
	srv := redistest.StartWithPassword(t, "s3cret-from-file")
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "redis.password")
	if err := os.WriteFile(pwFile, []byte("s3cret-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ping := func(cfg redisstate.Config) error {
		st, err := redisstate.New(cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		return st.Ping(context.Background())
	}
	if err := ping(redisstate.Config{Redis: srv.URL()}); err == nil {
		t.Fatal("the test Redis answers without its password")
	}
	if err := ping(redisstate.Config{Redis: srv.URL(), PasswordFile: pwFile}); err != nil {
		t.Fatalf("with password_file: %v", err)
	}

	// Refusals name the key and never show the password.
	open := filepath.Join(dir, "open.password")
	os.WriteFile(open, []byte("s3cret-from-file\n"), 0o644)
	empty := filepath.Join(dir, "empty.password")
	os.WriteFile(empty, nil, 0o600)
	for _, tt := range []struct {
		cfg  redisstate.Config
		want string
	}{
		{redisstate.Config{Redis: srv.URL(), PasswordFile: open}, "password_file: " + open + " has mode 0644: others may read it"},
		{redisstate.Config{Redis: srv.URL(), PasswordFile: empty}, "password_file: " + empty + " is empty"},
		{redisstate.Config{Redis: srv.URL(), PasswordFile: filepath.Join(dir, "missing")}, "password_file: "},
	} {
		_, err := redisstate.New(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%+v: %v, want %q", tt.cfg, err, tt.want)
		}
	}
	if err := (redisstate.Config{PasswordFile: pwFile}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "password_file: ") {
		t.Errorf("password_file without redis: %v", err)
	}
}
