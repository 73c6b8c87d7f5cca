package sshgw

import (
	"encoding/binary"
	"sort"
	"sync"
)

// SFTP (draft-ietf-secsh-filexfer-02, what OpenSSH speaks) packet types
// the audit reads.
const (
	fxpOpen   = 3
	fxpClose  = 4
	fxpRead   = 5
	fxpWrite  = 6
	fxpStatus = 101
	fxpHandle = 102
	fxpData   = 103

	fxfRead  = 0x01
	fxfWrite = 0x02
)

// maxSFTPHead is how much of a packet the audit keeps to read its fields
// (a path and a handle); the rest (file data) is counted and skipped.
const maxSFTPHead = 8 << 10

// maxSFTPTracked bounds the open files and requests remembered.
const maxSFTPTracked = 4096

// sftpFile is one file an sftp session opened.
type sftpFile struct {
	Path          string
	Flags         uint32
	Read, Written int64
}

// sftpStream reassembles one direction's SFTP packets from the byte
// stream, passing each packet's head (at most maxSFTPHead bytes) and its
// full length on.
type sftpStream struct {
	head   []byte // the packet being read: its length and head
	length uint32 // the current packet's length (after the 4 length bytes); 0: not known yet
	skip   int64  // bytes of the current packet still to skip
	broken bool   // not SFTP (or too big): stop reading
	packet func(typ byte, head []byte, full uint32)
}

func (s *sftpStream) write(p []byte) {
	for len(p) > 0 && !s.broken {
		if s.skip > 0 {
			n := min(int64(len(p)), s.skip)
			s.skip -= n
			p = p[n:]
			if s.skip == 0 {
				s.head, s.length = s.head[:0], 0
			}
			continue
		}
		if s.length == 0 {
			need := 4 - len(s.head)
			n := min(need, len(p))
			s.head = append(s.head, p[:n]...)
			p = p[n:]
			if len(s.head) < 4 {
				return
			}
			s.length = binary.BigEndian.Uint32(s.head)
			if s.length == 0 || s.length > 256<<10 {
				s.broken = true
				return
			}
			s.head = s.head[:0]
		}
		want := int(min(s.length, maxSFTPHead))
		n := min(want-len(s.head), len(p))
		s.head = append(s.head, p[:n]...)
		p = p[n:]
		if len(s.head) < want {
			return
		}
		s.packet(s.head[0], s.head[1:], s.length)
		if rest := int64(s.length) - int64(want); rest > 0 {
			s.skip = rest
		} else {
			s.head, s.length = s.head[:0], 0
		}
	}
}

// sftpAudit follows an sftp session's packets both ways: which files it
// opens, how many bytes it reads and writes of each. It is fed the
// client's stream (requests) and the node's (replies).
type sftpAudit struct {
	mu       sync.Mutex
	toNode   sftpStream
	toClient sftpStream
	opening  map[uint32]*sftpFile // OPEN request id → file, until its HANDLE
	files    map[string]*sftpFile // handle → file
	reading  map[uint32]*sftpFile // READ request id → file, until its DATA
	onClose  func(*sftpFile)
}

func newSFTPAudit(onClose func(*sftpFile)) *sftpAudit {
	a := &sftpAudit{opening: map[uint32]*sftpFile{}, files: map[string]*sftpFile{}, reading: map[uint32]*sftpFile{}, onClose: onClose}
	a.toNode.packet = a.request
	a.toClient.packet = a.reply
	return a
}

// fromClient and fromNode feed the streams.
func (a *sftpAudit) fromClient(p []byte) { a.mu.Lock(); a.toNode.write(p); a.mu.Unlock() }
func (a *sftpAudit) fromNode(p []byte)   { a.mu.Lock(); a.toClient.write(p); a.mu.Unlock() }

// sftpField reads an SFTP string (uint32 length, bytes) off b.
func sftpField(b []byte) ([]byte, []byte, bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}

func (a *sftpAudit) request(typ byte, b []byte, _ uint32) {
	if len(b) < 4 {
		return
	}
	id, rest := binary.BigEndian.Uint32(b), b[4:]
	switch typ {
	case fxpOpen:
		path, rest, ok := sftpField(rest)
		if !ok || len(rest) < 4 || len(a.opening) >= maxSFTPTracked {
			return
		}
		a.opening[id] = &sftpFile{Path: string(path), Flags: binary.BigEndian.Uint32(rest)}
	case fxpRead:
		h, _, ok := sftpField(rest)
		if f := a.files[string(h)]; ok && f != nil && len(a.reading) < maxSFTPTracked {
			a.reading[id] = f
		}
	case fxpWrite:
		h, rest, ok := sftpField(rest)
		if f := a.files[string(h)]; ok && f != nil && len(rest) >= 12 {
			// offset (8), then the data's length (4); the data itself
			// may lie beyond the head.
			f.Written += int64(binary.BigEndian.Uint32(rest[8:]))
		}
	case fxpClose:
		h, _, ok := sftpField(rest)
		if f := a.files[string(h)]; ok && f != nil {
			delete(a.files, string(h))
			a.report(f)
		}
	}
}

func (a *sftpAudit) reply(typ byte, b []byte, _ uint32) {
	if len(b) < 4 {
		return
	}
	id, rest := binary.BigEndian.Uint32(b), b[4:]
	switch typ {
	case fxpHandle:
		f := a.opening[id]
		delete(a.opening, id)
		h, _, ok := sftpField(rest)
		if f != nil && ok && len(a.files) < maxSFTPTracked {
			a.files[string(h)] = f
		}
	case fxpStatus:
		delete(a.opening, id) // an OPEN refused, or a READ at EOF
		delete(a.reading, id)
	case fxpData:
		f := a.reading[id]
		delete(a.reading, id)
		if f != nil && len(rest) >= 4 {
			f.Read += int64(binary.BigEndian.Uint32(rest))
		}
	}
}

// report passes a file on once.
func (a *sftpAudit) report(f *sftpFile) {
	if a.onClose != nil {
		a.onClose(f)
	}
}

// finish reports the files still open when the session ended.
func (a *sftpAudit) finish() {
	a.mu.Lock()
	defer a.mu.Unlock()
	handles := make([]string, 0, len(a.files))
	for h := range a.files {
		handles = append(handles, h)
	}
	sort.Strings(handles)
	for _, h := range handles {
		a.report(a.files[h])
	}
	a.files = map[string]*sftpFile{}
}

// direction says what the session did with a file.
func (f *sftpFile) direction() string {
	switch {
	case f.Written > 0 && f.Read > 0:
		return "read and write"
	case f.Written > 0 || (f.Flags&fxfWrite != 0 && f.Flags&fxfRead == 0):
		return "upload"
	default:
		return "download"
	}
}
