// Package ratelog holds back repeated log lines: one passes per interval,
// and the next that passes says how many were held back. It imports
// nothing of the project.
package ratelog

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// Limiter lets one event through per Every. Its zero value lets every
// event through; set Every (and Now, for tests) before first use.
type Limiter struct {
	Every time.Duration
	Now   func() time.Time // nil means time.Now

	mu   sync.Mutex // protects last and held
	last time.Time  // when an event last passed
	held int        // events held back since
}

// Allow reports whether this event may be logged, and if so how many were
// held back since the last that was.
func (l *Limiter) Allow() (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.Now != nil {
		now = l.Now()
	}
	if !l.last.IsZero() && now.Sub(l.last) < l.Every {
		l.held++
		return 0, false
	}
	held, l.last, l.held = l.held, now, 0
	return held, true
}

// Info logs msg at Info level when the limiter lets an event pass, with
// the count of those held back since (field held_back); it drops it
// otherwise. For lines anyone can cause, such as refusals.
func (l *Limiter) Info(log *zap.Logger, msg string, fields ...zap.Field) {
	held, ok := l.Allow()
	if !ok {
		return
	}
	if held > 0 {
		fields = append(fields, zap.Int("held_back", held))
	}
	log.Info(msg, fields...)
}
