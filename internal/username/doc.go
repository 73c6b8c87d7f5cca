// Package username owns the one rule for user names: the canonical form
// that every front end (SSH login names, JupyterHub paths, cookies and
// login forms, RDP cookies) and the admin API reduce a name to before
// the balancer sees it, so that "Alice" by SSH and "alice" in a browser
// are one user with one pin.
//
// [Canonical] lower-cases ASCII letters (as JupyterHub's default
// normalize_username does, and as Windows compares names) and checks the
// result: 1 to [MaxLen] bytes of a-z, 0-9, '_', '.', '@' and '-', not
// starting with '.', '@' or '-'. Nothing is trimmed or replaced: a name
// with anything else (a space, a slash, '+', a control character, a
// non-ASCII letter) is refused with an error that says why.
//
//	user, err := username.Canonical(raw)
//	if err != nil {
//		return fmt.Errorf("login refused: %w", err) // err never echoes raw
//	}
//
// The balancer never imports this package: it is handed names that are
// already canonical. It imports nothing of poolgate.
package username
