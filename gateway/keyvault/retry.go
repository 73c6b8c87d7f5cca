package keyvault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// Errors that callers may branch on; the errors Sign and Open return wrap
// one of them when Key Vault answered with a failure.
var (
	// ErrThrottled: Key Vault answered 429 for longer than the budget.
	ErrThrottled = errors.New("throttled by Key Vault")
	// ErrUnavailable: Key Vault failed (5xx), did not answer, or could not
	// be reached, for longer than the budget.
	ErrUnavailable = errors.New("unavailable: Key Vault failed or did not answer")
	// ErrDenied: the identity may not use the key (401, 403).
	ErrDenied = errors.New("access denied by Key Vault")
	// ErrNotFound: no such key or version (404).
	ErrNotFound = errors.New("key not found in Key Vault")
)

// RoleHelp says what the gateway's identity needs, for messages and docs.
const RoleHelp = "the gateway's identity needs the role Key Vault Crypto User on the vault or the key " +
	"(or, with access policies, the key permissions get and sign)"

// First waits between tries. Key Vault's guidance for 429 is to wait 1 s,
// then 2 s, 4 s...; for its own failures a shorter first wait is enough.
const (
	throttleWait = time.Second
	failureWait  = 200 * time.Millisecond
)

// attemptError is a failed try of an operation, kept for the message.
type attemptError struct {
	what   string // "signing", "fetching the public key"
	tries  int
	waited time.Duration
	budget time.Duration
	asked  time.Duration // a Retry-After that the budget could not wait for
	err    error         // the last try's error
}

func (e *attemptError) Error() string {
	return fmt.Sprintf("%s: %v", e.what, e.err)
}

// retry runs call until it succeeds, fails for good, or the budget would
// run out before the next try.
func (s *Signer) retry(ctx context.Context, budget time.Duration, what string, call func(context.Context) error) error {
	start := s.o.Now()
	deadline := start.Add(budget)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	throttled, failed := throttleWait, failureWait
	for tries := 1; ; tries++ {
		err := call(ctx)
		if err == nil {
			return nil
		}
		status := statusOf(err)
		var wait time.Duration
		switch {
		case status == http.StatusTooManyRequests:
			if s.o.Throttled != nil {
				s.o.Throttled()
			}
			wait, throttled = throttled, throttled*2
		case status == http.StatusRequestTimeout || status >= 500 || status == 0 && ctx.Err() == nil:
			wait, failed = failed, failed*2
		default: // a refusal, or the budget spent in the try itself
			return &attemptError{what: what, tries: tries, waited: s.o.Now().Sub(start), budget: budget, err: err}
		}
		if ra := retryAfter(err); ra > 0 {
			wait = ra
		}
		if s.o.Now().Add(wait).After(deadline) {
			ae := &attemptError{what: what, tries: tries, waited: s.o.Now().Sub(start), budget: budget, err: err}
			if retryAfter(err) > 0 {
				ae.asked = wait
			}
			return ae
		}
		if serr := s.o.Sleep(ctx, wait); serr != nil {
			return &attemptError{what: what, tries: tries, waited: s.o.Now().Sub(start), budget: budget, err: err}
		}
	}
}

// explain turns a failed operation into one line that says what failed,
// what Key Vault answered and what to do, wrapping a sentinel.
func (s *Signer) explain(version string, err error) error {
	var ae *attemptError
	if !errors.As(err, &ae) {
		return fmt.Errorf("keyvault: %w", err)
	}
	key := fmt.Sprintf("key %s in %s", s.ref(version), s.vault)
	tried := fmt.Sprintf("%d tries in %s (the budget is %s)", ae.tries, ae.waited.Round(time.Millisecond), ae.budget)
	if ae.tries == 1 {
		tried = "1 try"
	}
	if ae.asked > 0 {
		tried += fmt.Sprintf("; it asked to wait %s more", ae.asked)
	}
	var re *azcore.ResponseError
	if !errors.As(ae.err, &re) {
		if errors.Is(ae.err, context.DeadlineExceeded) {
			return fmt.Errorf("keyvault: %s %s: %w: no answer within %s", ae.what, key, ErrUnavailable, ae.budget)
		}
		return fmt.Errorf("keyvault: %s %s: %w after %s: %v", ae.what, key, ErrUnavailable, tried, ae.err)
	}
	answer := fmt.Sprintf("%d %s", re.StatusCode, re.ErrorCode)
	switch {
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
		return fmt.Errorf("keyvault: %s %s: %w (%s); %s", ae.what, key, ErrDenied, answer, RoleHelp)
	case re.StatusCode == http.StatusNotFound:
		return fmt.Errorf("keyvault: %s %s: %w (%s); check ca.key_vault.url, key and version", ae.what, key, ErrNotFound, answer)
	case re.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("keyvault: %s %s: %w (%s) after %s", ae.what, key, ErrThrottled, answer, tried)
	case re.StatusCode == http.StatusRequestTimeout || re.StatusCode >= 500:
		return fmt.Errorf("keyvault: %s %s: %w (%s) after %s", ae.what, key, ErrUnavailable, answer, tried)
	}
	return fmt.Errorf("keyvault: %s %s: Key Vault refused the request (%s)", ae.what, key, answer)
}

// statusOf is the HTTP status of an SDK error, 0 when there was no answer.
func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// retryAfter reads how long Key Vault asked to wait, 0 when it did not.
func retryAfter(err error) time.Duration {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.RawResponse == nil {
		return 0
	}
	h := re.RawResponse.Header
	for _, name := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if ms, err := strconv.Atoi(h.Get(name)); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if sec, err := strconv.Atoi(v); err == nil && sec > 0 {
		return time.Duration(sec) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}
