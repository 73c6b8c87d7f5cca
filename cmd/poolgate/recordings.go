package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/poolgate/poolgate/gateway/admin"
)

// cmdRecordings is poolgate recordings [--user U] [--node N] [--since T]:
// the session recordings, newest first.
func cmdRecordings(args []string, stdout, stderr io.Writer) int {
	fs := flags("recordings", stderr)
	base, token, asJSON := clientFlags(fs)
	user := fs.String("user", "", "only this user's sessions")
	node := fs.String("node", "", "only sessions on this node")
	since := fs.String("since", "", "only sessions started since: a time (2026-12-08T09:00:00Z) or a duration back from now (24h)")
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "poolgate recordings: unexpected argument %q\n", pos[0])
		return 2
	}
	q := url.Values{}
	for k, v := range map[string]string{"user": *user, "node": *node, "since": *since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	path := "/api/recordings"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	raw, code := fetch("recordings", c, path, *asJSON, stdout, stderr)
	if code >= 0 {
		return code
	}
	var resp admin.RecordingsJSON
	if err := json.Unmarshal(raw, &resp); err != nil {
		fmt.Fprintln(stderr, "poolgate recordings:", err)
		return 1
	}
	if len(resp.Recordings) == 0 {
		fmt.Fprintln(stdout, "no recordings match")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tNODE\tSTARTED\tLASTED\tEXIT\tSIZE\tCOMMAND")
	for _, m := range resp.Recordings {
		lasted, exit := "running?", "-"
		if !m.End.IsZero() {
			lasted = m.End.Sub(m.Start).Round(time.Second).String()
		}
		if m.Exit >= 0 {
			exit = fmt.Sprint(m.Exit)
		}
		cmd := m.Command
		if cmd == "" {
			cmd = "(shell)"
		}
		if m.Incomplete {
			cmd += "  [incomplete: " + m.Reason + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", term(m.ID), term(m.User), term(m.Node),
			m.Start.Local().Format("2006-01-02 15:04:05"), lasted, exit, m.Size, term(cmd))
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "%d recordings; play one with poolgate play ID\n", len(resp.Recordings))
	return 0
}

// cmdPlay is poolgate play ID [--speed X] [--idle-limit D]: a recording
// replayed in the terminal with its timing.
func cmdPlay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("play", stderr)
	base, token, _ := clientFlags(fs)
	speed := fs.Float64("speed", 1, "play this many times faster")
	idle := fs.Duration("idle-limit", 2*time.Second, "wait at most this long between two events (0: as recorded)")
	raw := fs.Bool("raw", false, "write the asciicast file itself (for asciinema play, or to keep it)")
	pos, code := parseWithArgs(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "poolgate play: name one recording: poolgate play ID (poolgate recordings lists them)")
		return 2
	}
	if *speed <= 0 {
		fmt.Fprintln(stderr, "poolgate play: --speed must be positive")
		return 2
	}
	c := &adminClient{base: *base, token: *token, http: &http.Client{Timeout: 5 * time.Minute}}
	var cast json.RawMessage
	if err := c.do("GET", "/api/recordings/"+url.PathEscape(pos[0]), &cast); err != nil {
		fmt.Fprintf(stderr, "poolgate play: %v\n", err)
		return 1
	}
	if *raw {
		_, _ = stdout.Write(cast)
		return 0
	}
	if err := play(ctx, bytes.NewReader(cast), stdout, *speed, *idle); err != nil {
		fmt.Fprintf(stderr, "poolgate play: %v\n", err)
		return 1
	}
	return 0
}

// play writes an asciicast v2 stream's output events to w with their
// timing (divided by speed, gaps capped at idle when positive).
func play(ctx context.Context, r io.Reader, w io.Writer, speed float64, idle time.Duration) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	if !sc.Scan() {
		return errors.New("an empty recording")
	}
	var hdr struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil || hdr.Version != 2 {
		return errors.New("not an asciicast v2 recording")
	}
	last := 0.0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var ev []json.RawMessage
		if err := json.Unmarshal([]byte(line), &ev); err != nil || len(ev) != 3 {
			return fmt.Errorf("a bad event line: %.40q", line)
		}
		var at float64
		var kind, data string
		if json.Unmarshal(ev[0], &at) != nil || json.Unmarshal(ev[1], &kind) != nil || json.Unmarshal(ev[2], &data) != nil {
			return fmt.Errorf("a bad event line: %.40q", line)
		}
		if kind != "o" {
			continue
		}
		wait := time.Duration((at - last) / speed * float64(time.Second))
		last = at
		if idle > 0 && wait > idle {
			wait = idle
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		if _, err := io.WriteString(w, data); err != nil {
			return err
		}
	}
	return sc.Err()
}
