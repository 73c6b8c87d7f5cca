// Package e2e holds whole-system tests: the real OpenSSH server and client
// against a poolgate gateway. They need root (to run sshd and create test
// users) and the Debian packages openssh-server, openssh-client and sshpass.
// Without them the tests fail when CI is set and are skipped otherwise.
package e2e
