package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// ptyRun is one PTY session's figures.
type ptyRun struct {
	secs     float64 // wall time from the command's start to its output's end
	received int64   // bytes the client read (the PTY turns \n into \r\n)
	cpu      float64 // the gateway's CPU seconds over the session
	cast     int64   // bytes of the recording's cast file; 0 when off
	meta     recMeta // the recording's metadata; zero when off
	events   int     // the recording's events
}

// recMeta is what the bench reads of a recording's metadata file.
type recMeta struct {
	ID         string    `json:"id"`
	End        time.Time `json:"end"`
	Size       int64     `json:"size"`
	Incomplete bool      `json:"incomplete"`
	Reason     string    `json:"reason"`
}

// recording measures the relay of a PTY session's output with session
// recording off and on: alternating gateways (off, on, off, on, …), one
// session per run that prints size bytes of printable text to its
// terminal, the client reading all of it.
func (b *bench) recording(size int64, runs int) {
	size = max(size, 1<<20)
	if !b.sshd {
		b.startSSHD()
	}
	// Printable text, in lines as base64 writes them, so the recording's
	// JSON escaping (\r\n at each line end) is realistic. Made once, and
	// cat by the node: the node's side costs both runs alike and little.
	text := filepath.Join("/dev/shm", "sshbench-pty.txt")
	run("bash", "-c", "base64 -w 76 /dev/urandom | head -c "+strconv.FormatInt(size, 10)+" > "+text)
	must(os.Chmod(text, 0o644), "chmod")
	defer os.Remove(text)

	recDir := filepath.Join(b.dir, "recordings")
	confOff := filepath.Join(b.dir, "poolgate.yaml")
	confOn := filepath.Join(b.dir, "poolgate-recording.yaml")
	data := mustRead(confOff)
	data = append(data, fmt.Sprintf("recording:\n  enabled: true\n  dir: %s\n", recDir)...)
	must(os.WriteFile(confOn, data, 0o644), "config")

	signer, err := ssh.ParsePrivateKey(mustRead(b.key))
	must(err, "client key")
	cfg := &ssh.ClientConfig{
		User: benchUser, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Config:  ssh.Config{KeyExchanges: []string{"curve25519-sha256"}, Ciphers: []string{"aes128-gcm@openssh.com"}},
		Timeout: 30 * time.Second,
	}

	// one runs a session directly ("direct") or through a gateway with
	// recording "off" or "on", printing the text repeat times; profile,
	// when not empty, names a CPU profile of the gateway taken during it
	// (seconds long).
	one := func(mode string, repeat int, profile string, seconds int) ptyRun {
		on := mode == "on"
		addr, pid := gwAddr, 0
		if mode == "direct" {
			addr = nodeAddr
		} else {
			conf := confOff
			if on {
				conf = confOn
			}
			b.startGatewayConf(conf)
			defer b.stopGateway()
			pid = b.gateway.Process.Pid
		}
		c, err := ssh.Dial("tcp", addr, cfg)
		must(err, "dial "+addr)
		defer c.Close()
		s, err := c.NewSession()
		must(err, "session")
		modes := ssh.TerminalModes{ssh.ECHO: 0, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
		must(s.RequestPty("xterm", 40, 120, modes), "pty")
		out, err := s.StdoutPipe()
		must(err, "stdout")
		var profiled chan struct{}
		if profile != "" {
			profiled = make(chan struct{})
			go func() {
				defer close(profiled)
				resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, seconds))
				must(err, "pprof")
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				must(os.WriteFile(filepath.Join(profileDir, profile), data, 0o644), "profile")
			}()
			time.Sleep(100 * time.Millisecond) // the profile has started
		}
		var r ptyRun
		var before float64
		if pid != 0 {
			before = cpuSeconds(pid)
		}
		start := time.Now()
		must(s.Start("cat"+strings.Repeat(" "+text, repeat)), "start")
		r.received, err = io.Copy(io.Discard, out)
		must(err, "reading the output")
		must(s.Wait(), "the command")
		r.secs = time.Since(start).Seconds()
		if profiled != nil {
			<-profiled
		}
		if on {
			// The recording's writer is done when its metadata has an end.
			deadline := time.Now().Add(2 * time.Minute)
			for {
				metas, _ := filepath.Glob(filepath.Join(recDir, "*", "*.json"))
				if len(metas) > 1 {
					fatal(fmt.Sprintf("%d recordings, want one", len(metas)))
				}
				if len(metas) == 1 {
					if data, err := os.ReadFile(metas[0]); err == nil && json.Unmarshal(data, &r.meta) == nil && !r.meta.End.IsZero() {
						st, err := os.Stat(strings.TrimSuffix(metas[0], ".json") + ".cast")
						must(err, "the recording's cast file")
						r.cast = st.Size()
						break
					}
				}
				if time.Now().After(deadline) {
					fatal("the recording was not finished within two minutes")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if r.cast == 0 {
				fatal("the recording's cast file is empty")
			}
		}
		if pid != 0 {
			r.cpu = cpuSeconds(pid) - before
		}
		if on {
			casts, _ := filepath.Glob(filepath.Join(recDir, "*", "*.cast"))
			data, err := os.ReadFile(casts[0])
			must(err, "reading the recording")
			r.events = bytes.Count(data, []byte("\n")) - 1 // the header's line
		}
		must(os.RemoveAll(recDir), "removing the recording") // each run's own
		if r.received < int64(repeat)*size {
			fatal(fmt.Sprintf("received %d bytes, sent %d", r.received, int64(repeat)*size))
		}
		return r
	}

	var direct, off, on []ptyRun
	for i := 0; i < runs; i++ {
		direct = append(direct, one("direct", 1, "", 0))
		off = append(off, one("off", 1, "", 0))
		on = append(on, one("on", 1, "", 0))
	}
	mibps := func(rs []ptyRun) []float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, float64(r.received)/(1<<20)/r.secs)
		}
		return xs
	}
	cpuGiB := func(rs []ptyRun) []float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, r.cpu/(float64(r.received)/(1<<30)))
		}
		return xs
	}
	var castRatio []float64
	incomplete := 0
	var reasons []string
	for _, r := range on {
		castRatio = append(castRatio, float64(r.cast)/float64(r.received))
		if r.meta.Incomplete {
			incomplete++
			reasons = append(reasons, r.meta.Reason)
		}
	}
	offT, onT := median(mibps(off)), median(mibps(on))
	offC, onC := median(cpuGiB(off)), median(cpuGiB(on))

	dirT := median(mibps(direct))
	var events, bytesIn int64
	for _, r := range on {
		events += int64(r.events)
		bytesIn += r.received
	}
	fmt.Printf("## Session recording: PTY output, %.0f MiB per run (`cat` of base64 text in a PTY, x/crypto client, aes128-gcm), median of %d, direct, recording off and on alternating\n\n", float64(on[0].received)/(1<<20), runs)
	fmt.Println("| path | MiB/s | gateway CPU s/GiB | recording GiB per GiB of output |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	fmt.Printf("| direct (no gateway) | %.0f | — | — |\n", dirT)
	fmt.Printf("| gateway, recording off | %.0f | %.2f | — |\n", offT, offC)
	fmt.Printf("| gateway, recording on | %.0f | %.2f | %.3f |\n", onT, onC, median(castRatio))
	fmt.Printf("| on/off | %.2f× | %.2f× | |\n\n", onT/offT, onC/offC)
	list := func(xs []float64, prec int) string {
		var s []string
		for _, x := range xs {
			s = append(s, strconv.FormatFloat(x, 'f', prec, 64))
		}
		return strings.Join(s, ", ")
	}
	var marks []string
	for i, r := range on {
		if r.meta.Incomplete {
			marks = append(marks, strconv.Itoa(i+1))
		}
	}
	note := ""
	if len(marks) > 0 {
		note = " (recording incomplete in run " + strings.Join(marks, ", ") + ")"
	}
	fmt.Printf("Each run, in order: direct %s MiB/s; off %s MiB/s at %s CPU s/GiB; on %s MiB/s at %s CPU s/GiB, recording %s bytes per byte of output%s.\n\n",
		list(mibps(direct), 0), list(mibps(off), 0), list(cpuGiB(off), 2), list(mibps(on), 0), list(cpuGiB(on), 2), list(castRatio, 3), note)
	fmt.Printf("Recording events: %.0f bytes of output each on average (%d events).\n\n", float64(bytesIn)/float64(max(events, 1)), events)
	if incomplete == 0 {
		fmt.Printf("Recordings: %d of %d complete (metadata: incomplete false), none empty.\n\n", runs, runs)
	} else {
		fmt.Printf("Recordings: **%d of %d incomplete** (output dropped): %s.\n\n", incomplete, runs, strings.Join(reasons, "; "))
	}
	if onT < 0.9*offT {
		fmt.Printf("Goal (throughput at most 10%% lower with recording on): **missed**, %.0f%% lower.\n\n", 100*(1-onT/offT))
	} else {
		fmt.Printf("Goal (throughput at most 10%% lower with recording on): met, %.0f%% lower.\n\n", 100*(1-onT/offT))
	}
	if profileDir != "" {
		// One more run each, not counted, four times as long, with a CPU
		// profile of the gateway over most of the transfer.
		secs := max(1, int(4*float64(size)/(1<<20)/onT*0.8))
		one("off", 4, "cpu-pty-recording-off.pb.gz", secs)
		one("on", 4, "cpu-pty-recording-on.pb.gz", secs)
		fmt.Printf("CPU profiles (%d s each, one extra run off and on, 4× the output): %s\n\n", secs,
			filepath.Join(profileDir, "cpu-pty-recording-{off,on}.pb.gz"))
	}
}
