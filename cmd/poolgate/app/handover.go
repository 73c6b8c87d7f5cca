// The handover protocol: what a gateway that is being upgraded tells its
// successor over a pipe, one line a message.
//
//	pin {"user":..,"node":..,"by":..,"until":..}      a pin (until zero: the user has sessions)
//	session {"id":..,"user":..,"node":..,...}         a live session the old process relays
//	go                                                 the snapshot is complete
//	end ID                                             that session ended
//
// pin and session lines come first (the snapshot), then go; after it,
// session lines (a login that was under way at the handover) and end
// lines, until the pipe closes when the old process exits.

package app

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/poolgate/poolgate/balancer"
)

// handoverKind is what a handover line says.
type handoverKind int

const (
	handoverPin handoverKind = iota + 1
	handoverSession
	handoverGo
	handoverEnd
)

func (k handoverKind) String() string {
	switch k {
	case handoverPin:
		return "pin"
	case handoverSession:
		return "session"
	case handoverGo:
		return "go"
	case handoverEnd:
		return "end"
	}
	return fmt.Sprintf("kind %d", int(k))
}

// handoverPinMsg is one pin of the old process.
type handoverPinMsg struct {
	User  string             `json:"user"`
	Node  string             `json:"node"`
	By    balancer.PinOrigin `json:"by,omitempty"`
	Until time.Time          `json:"until,omitzero"`
}

// handoverSessionMsg is one live session of the old process; ID is its
// ID there.
type handoverSessionMsg struct {
	ID       uint64            `json:"id"`
	User     string            `json:"user"`
	Node     string            `json:"node"`
	Protocol balancer.Protocol `json:"protocol"`
	Client   string            `json:"client,omitempty"`
	Started  time.Time         `json:"started"`
}

// handoverMsg is one decoded line.
type handoverMsg struct {
	kind    handoverKind
	pin     handoverPinMsg     // handoverPin
	session handoverSessionMsg // handoverSession
	id      uint64             // handoverEnd
}

// maxHandoverLine bounds a line: a session's fields are a few hundred
// bytes.
const maxHandoverLine = 16 << 10

// encodeHandover is m's line, with its newline.
func encodeHandover(m handoverMsg) []byte {
	var verb string
	var body any
	switch m.kind {
	case handoverPin:
		verb, body = "pin", m.pin
	case handoverSession:
		verb, body = "session", m.session
	case handoverGo:
		return []byte("go\n")
	case handoverEnd:
		return []byte("end " + strconv.FormatUint(m.id, 10) + "\n")
	default:
		panic("handover: unknown message " + m.kind.String())
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err) // strings, numbers and times only
	}
	return append(append([]byte(verb+" "), b...), '\n')
}

// decodeHandover parses one line (without its newline). It returns an
// error for anything but a well-formed message with the fields it needs.
func decodeHandover(line string) (handoverMsg, error) {
	verb, rest, _ := strings.Cut(line, " ")
	switch verb {
	case "go":
		if rest != "" || strings.Contains(line, " ") {
			return handoverMsg{}, errors.New(`"go" takes nothing`)
		}
		return handoverMsg{kind: handoverGo}, nil
	case "end":
		id, err := strconv.ParseUint(rest, 10, 64)
		if err != nil || id == 0 {
			return handoverMsg{}, fmt.Errorf("end: bad session ID %q", rest)
		}
		return handoverMsg{kind: handoverEnd, id: id}, nil
	case "pin":
		var p handoverPinMsg
		if err := strictJSON(rest, &p); err != nil {
			return handoverMsg{}, fmt.Errorf("pin: %w", err)
		}
		if p.User == "" || p.Node == "" {
			return handoverMsg{}, errors.New("pin: user and node are required")
		}
		return handoverMsg{kind: handoverPin, pin: p}, nil
	case "session":
		var s handoverSessionMsg
		if err := strictJSON(rest, &s); err != nil {
			return handoverMsg{}, fmt.Errorf("session: %w", err)
		}
		if s.ID == 0 || s.User == "" || s.Node == "" || s.Protocol == "" {
			return handoverMsg{}, errors.New("session: id, user, node and protocol are required")
		}
		return handoverMsg{kind: handoverSession, session: s}, nil
	}
	return handoverMsg{}, fmt.Errorf("unknown message %.20q", verb)
}

// strictJSON decodes exactly one JSON object into v, refusing unknown
// fields and trailing data.
func strictJSON(s string, v any) error {
	d := json.NewDecoder(strings.NewReader(s))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

// handoverReader reads handover messages from r.
type handoverReader struct{ sc *bufio.Scanner }

func newHandoverReader(r io.Reader) *handoverReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxHandoverLine)
	return &handoverReader{sc}
}

// next returns the next message, or io.EOF when the pipe closed.
func (h *handoverReader) next() (handoverMsg, error) {
	if !h.sc.Scan() {
		if err := h.sc.Err(); err != nil {
			return handoverMsg{}, err
		}
		return handoverMsg{}, io.EOF
	}
	return decodeHandover(h.sc.Text())
}
