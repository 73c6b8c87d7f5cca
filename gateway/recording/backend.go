package recording

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Backend is where recordings are kept: a directory (Dir), or Azure Blob
// Storage (blob.go). Store does the recording; a backend only stores.
type Backend interface {
	// Create starts the cast file of a recording.
	Create(m Meta) (Sink, error)
	// PutMeta writes (or replaces) a recording's metadata.
	PutMeta(m Meta) error
	// List returns every recording's metadata whose day is not before
	// since's (zero: all); the caller filters further.
	List(since time.Time) ([]Meta, error)
	// Open returns a recording's cast file and metadata, or ErrNotFound.
	Open(id string) (io.ReadCloser, Meta, error)
	// Writable reports whether recordings can be written now.
	Writable() error
	// Sweep deletes the recordings of days before before.
	Sweep(before time.Time) (deleted []string, err error)
}

// Sink is one cast file being written.
type Sink interface {
	io.Writer
	// Sync makes what was written durable (a directory: fsync; Blob
	// Storage: the bytes written since are appended as a block).
	Sync() error
	// Close ends the file and reports its size.
	Close() (size int64, err error)
}

// dayOf is the day directory (or blob prefix) of a recording's ID.
func dayOf(id string) (string, error) {
	if !ValidID(id) {
		return "", ErrNotFound
	}
	day, err := time.Parse("20060102", id[:8])
	if err != nil {
		return "", ErrNotFound
	}
	return day.Format("2006-01-02"), nil
}

// Dir keeps recordings in a directory, one subdirectory per day:
// ID.cast and ID.json.
type Dir struct{ Path string }

func (d Dir) Create(m Meta) (Sink, error) {
	day, err := dayOf(m.ID)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(d.Path, day), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(d.Path, day, m.ID+".cast"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return fileSink{f}, nil
}

type fileSink struct{ f *os.File }

func (s fileSink) Write(p []byte) (int, error) { return s.f.Write(p) }
func (s fileSink) Sync() error                 { return nil } // written through to the kernel: a dead gateway loses nothing written
func (s fileSink) Close() (int64, error) {
	_ = s.f.Sync()
	st, err := s.f.Stat()
	cerr := s.f.Close()
	if err != nil {
		return 0, err
	}
	return st.Size(), cerr
}

func (d Dir) PutMeta(m Meta) error {
	day, err := dayOf(m.ID)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(d.Path, day, m.ID+".json")
	if err := os.WriteFile(path+".tmp", append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func (d Dir) List(since time.Time) ([]Meta, error) {
	days, err := os.ReadDir(d.Path)
	if err != nil {
		return nil, err
	}
	var out []Meta
	for _, e := range days {
		if !e.IsDir() {
			continue
		}
		day, err := time.Parse("2006-01-02", e.Name())
		if err != nil || (!since.IsZero() && day.Add(24*time.Hour).Before(since)) {
			continue
		}
		metas, _ := filepath.Glob(filepath.Join(d.Path, e.Name(), "*.json"))
		for _, p := range metas {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			var m Meta
			if json.Unmarshal(b, &m) == nil && ValidID(m.ID) {
				out = append(out, m)
			}
		}
	}
	return out, nil
}

func (d Dir) Open(id string) (io.ReadCloser, Meta, error) {
	day, err := dayOf(id)
	if err != nil {
		return nil, Meta{}, err
	}
	base := filepath.Join(d.Path, day, id)
	var m Meta
	b, err := os.ReadFile(base + ".json")
	if err != nil || json.Unmarshal(b, &m) != nil {
		return nil, Meta{}, ErrNotFound
	}
	f, err := os.Open(base + ".cast")
	if err != nil {
		return nil, Meta{}, ErrNotFound
	}
	return f, m, nil
}

func (d Dir) Writable() error {
	f, err := os.CreateTemp(d.Path, ".probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, err = f.Write([]byte("ok"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	_ = os.Remove(name)
	return err
}

func (d Dir) Sweep(before time.Time) ([]string, error) {
	days, err := os.ReadDir(d.Path)
	if err != nil {
		return nil, err
	}
	var gone []string
	var errs []error
	for _, e := range days {
		day, err := time.Parse("2006-01-02", e.Name())
		if err != nil || !e.IsDir() || !day.Add(24*time.Hour).Before(before) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.Path, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, e.Name())
	}
	return gone, errors.Join(errs...)
}
