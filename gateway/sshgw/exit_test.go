package sshgw

import (
	"encoding/binary"
	"io"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestExitStatusReachesClientThatClosesAtEOF runs a command that closes
// its output before it exits, through a client that closes the channel as
// soon as it sees EOF (as an OpenSSH ControlMaster and PuTTY's plink do):
// the exit status must reach it all the same, since a failing command
// must never look like a success.
func TestExitStatusReachesClientThatClosesAtEOF(t *testing.T) {
	g := newTestGW(t, nil)
	c := dialAs(t, g.addr, "alice", g.userKey)
	defer c.Close()
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	exits := make(chan uint32, 1)
	go func() {
		for r := range reqs {
			if r.Type == "exit-status" && len(r.Payload) >= 4 {
				exits <- binary.BigEndian.Uint32(r.Payload)
			}
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
		close(exits)
	}()
	if ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"eof-exit 3"})); !ok || err != nil {
		t.Fatalf("exec: %v %v", ok, err)
	}
	out, err := io.ReadAll(ch)
	if err != nil || string(out) != "out" {
		t.Fatalf("stdout %q, %v", out, err)
	}
	ch.Close() // at EOF, as a ControlMaster does
	code, ok := <-exits
	if !ok {
		t.Fatal("the channel closed with no exit status: the command's failure was lost")
	}
	if code != 3 {
		t.Fatalf("exit status %d, want 3", code)
	}
}
