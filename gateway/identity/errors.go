package identity

import (
	"errors"
	"fmt"
)

// Reasons a sign-in fails, for callers to branch on with errors.Is. Every
// error the package returns for a sign-in wraps one of them, or a context
// error when the caller gave up; UserMessage turns any of them into the
// one line to show the user.
var (
	// ErrProviderUnavailable: the provider could not be reached, was too
	// slow, or answered with something that is not its protocol.
	ErrProviderUnavailable = errors.New("identity provider unavailable")
	// ErrTooManyStarts: the client's address (or the gateway as a whole)
	// started too many device-code sign-ins lately.
	ErrTooManyStarts = errors.New("too many sign-ins started")
	// ErrDeclined: the user declined the sign-in (authorization_declined,
	// access_denied).
	ErrDeclined = errors.New("sign-in declined")
	// ErrExpired: the device code expired before the user finished
	// (expired_token, or expires_in passed while polling).
	ErrExpired = errors.New("sign-in code expired")
	// ErrBadCode: the provider does not know the device code
	// (bad_verification_code).
	ErrBadCode = errors.New("sign-in code not recognised")
	// ErrInvalidToken: the ID token failed verification (signature,
	// issuer, audience, expiry, nonce) or was missing.
	ErrInvalidToken = errors.New("ID token invalid")
	// ErrNotAllowed: the user is in none of identity.allowed_groups.
	ErrNotAllowed = errors.New("not in an allowed group")
	// ErrGroupOverage: the token names no groups because the user is in
	// too many (Entra's _claim_names / hasgroups), and groups decide.
	ErrGroupOverage = errors.New("group overage")
	// ErrBadUsername: the username claim is missing, in a domain not
	// accepted, or not a valid login name.
	ErrBadUsername = errors.New("username claim unusable")
	// ErrWrongUser: the login name is not the signed-in user's.
	ErrWrongUser = errors.New("login name is not the signed-in user")
)

// refusal is a sign-in failure: a reason to branch on, a complete
// sentence for the user (never holding a token or provider detail), and
// the detail for the log.
type refusal struct {
	reason error
	msg    string
	detail error // may be nil
}

func (r *refusal) Error() string {
	if r.detail == nil {
		return r.msg
	}
	return r.msg + ": " + r.detail.Error()
}

func (r *refusal) Unwrap() []error {
	if r.detail == nil {
		return []error{r.reason}
	}
	return []error{r.reason, r.detail}
}

func refuse(reason error, detail error, format string, args ...any) error {
	return &refusal{reason: reason, msg: fmt.Sprintf(format, args...), detail: detail}
}

// UserMessage is the one line to show a user whose sign-in failed with
// err, starting "poolgate: ". It holds nothing from the provider but the
// sentences this package wrote, so it is safe to print on any terminal.
func UserMessage(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return "poolgate: " + r.msg
	}
	return "poolgate: sign-in failed; try again later, or log in with a key the gateway knows"
}
