// Package e2e holds whole-system tests: a poolgate gateway (the real
// binary's wiring, app.New) in front of real peers: OpenSSH sshd nodes on
// 127.0.0.N:2222 driven by the real ssh, scp, sftp and rsync clients,
// JupyterHub nodes driven by headless Chromium (chromedp), redis-server for
// gateways that share state, the Azure SDK's fakes for scale sets, and
// oidc-provider from npm (e2e/oidc, run by the machine's node) as the
// OpenID provider, its pages filled by Chromium.
//
// They need root (to run sshd and create test users) and the Debian
// packages that .ci/run installs. Without them the tests fail when CI is
// set and are skipped, saying what is missing, otherwise. The files hold
// only tests; this file gives the package its documentation.
package e2e
