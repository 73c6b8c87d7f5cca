package sshgw

import (
	"encoding/binary"
	"testing"
)

// sftpPacket builds an SFTP packet: length, type, fields.
func sftpPacket(typ byte, fields ...any) []byte {
	var body []byte
	body = append(body, typ)
	for _, f := range fields {
		switch v := f.(type) {
		case uint32:
			body = binary.BigEndian.AppendUint32(body, v)
		case uint64:
			body = binary.BigEndian.AppendUint64(body, v)
		case string:
			body = binary.BigEndian.AppendUint32(body, uint32(len(v)))
			body = append(body, v...)
		case []byte:
			body = binary.BigEndian.AppendUint32(body, uint32(len(v)))
			body = append(body, v...)
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// feed passes p in pieces of n bytes, as the relay's reads cut it.
func feed(write func([]byte), p []byte, n int) {
	for len(p) > 0 {
		k := min(n, len(p))
		write(p[:k])
		p = p[k:]
	}
}

func TestSFTPAuditNamesEachFile(t *testing.T) {
	var got []sftpFile
	a := newSFTPAudit(func(f *sftpFile) { got = append(got, *f) })
	for _, piece := range []int{1, 7, 1 << 20} {
		got = nil
		// An upload of 50000 bytes in two writes, then a download of 3000.
		feed(a.fromClient, sftpPacket(fxpOpen, uint32(1), "/home/alice/up.csv", uint32(fxfWrite|0x08|0x10), uint32(0)), piece)
		feed(a.fromNode, sftpPacket(fxpHandle, uint32(1), "h1"), piece)
		feed(a.fromClient, sftpPacket(fxpWrite, uint32(2), "h1", uint64(0), make([]byte, 32768)), piece)
		feed(a.fromClient, sftpPacket(fxpWrite, uint32(3), "h1", uint64(32768), make([]byte, 50000-32768)), piece)
		feed(a.fromNode, sftpPacket(fxpStatus, uint32(2), uint32(0), "", ""), piece)
		feed(a.fromClient, sftpPacket(fxpClose, uint32(4), "h1"), piece)
		feed(a.fromClient, sftpPacket(fxpOpen, uint32(5), "/data/big.parquet", uint32(fxfRead), uint32(0)), piece)
		feed(a.fromNode, sftpPacket(fxpHandle, uint32(5), "h2"), piece)
		feed(a.fromClient, sftpPacket(fxpRead, uint32(6), "h2", uint64(0), uint32(32768)), piece)
		feed(a.fromNode, sftpPacket(fxpData, uint32(6), make([]byte, 3000)), piece)
		feed(a.fromClient, sftpPacket(fxpRead, uint32(7), "h2", uint64(3000), uint32(32768)), piece)
		feed(a.fromNode, sftpPacket(fxpStatus, uint32(7), uint32(1), "EOF", ""), piece)
		// A file opened and never closed is reported at the end.
		feed(a.fromClient, sftpPacket(fxpOpen, uint32(8), "/tmp/left-open", uint32(fxfRead), uint32(0)), piece)
		feed(a.fromNode, sftpPacket(fxpHandle, uint32(8), "h3"), piece)
		feed(a.fromClient, sftpPacket(fxpClose, uint32(9), "h2"), piece)
		a.finish()
		want := []sftpFile{
			{Path: "/home/alice/up.csv", Flags: fxfWrite | 0x08 | 0x10, Written: 50000},
			{Path: "/data/big.parquet", Flags: fxfRead, Read: 3000},
			{Path: "/tmp/left-open", Flags: fxfRead},
		}
		if len(got) != len(want) {
			t.Fatalf("pieces of %d: files %+v", piece, got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("pieces of %d: file %d = %+v, want %+v", piece, i, got[i], want[i])
			}
		}
		if got[0].direction() != "upload" || got[1].direction() != "download" {
			t.Fatalf("directions %q %q", got[0].direction(), got[1].direction())
		}
	}
}

func TestSFTPAuditStopsOnGarbage(t *testing.T) {
	a := newSFTPAudit(func(*sftpFile) { t.Fatal("a file from garbage") })
	a.fromClient([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	if !a.toNode.broken {
		t.Fatal("a 4 GiB packet length was taken")
	}
	a.fromClient(sftpPacket(fxpOpen, uint32(1), "/x", uint32(1), uint32(0)))
	a.finish()
}

func FuzzSFTPAudit(f *testing.F) {
	f.Add(sftpPacket(fxpOpen, uint32(1), "/a", uint32(fxfRead), uint32(0)), sftpPacket(fxpHandle, uint32(1), "h"))
	f.Add(sftpPacket(fxpWrite, uint32(2), "h", uint64(0), []byte("data")), sftpPacket(fxpData, uint32(2), []byte("x")))
	f.Fuzz(func(t *testing.T, fromClient, fromNode []byte) {
		n := 0
		a := newSFTPAudit(func(f *sftpFile) {
			n++
			if f.Read < 0 || f.Written < 0 {
				t.Fatalf("negative counts %+v", f)
			}
		})
		a.fromClient(fromClient)
		a.fromNode(fromNode)
		a.fromClient(fromClient)
		a.finish()
		if len(a.opening) > maxSFTPTracked || len(a.reading) > maxSFTPTracked || len(a.toNode.head) > maxSFTPHead+4 {
			t.Fatal("unbounded state")
		}
	})
}
