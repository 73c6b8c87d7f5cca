// Command poolgate is a session-aware SSH, JupyterHub and RDP gateway for a
// pool of interactive VMs (such as an Azure scale set of Data Science VMs):
// it sends each new user to the least-loaded live VM and keeps them there,
// in the terminal and the browser alike. Its subcommands run the gateway
// (serve, demo), print the user CA for the nodes (ca-pubkey), and talk to
// a running gateway's admin API (nodes, sessions, drain, undrain,
// scale-in). See README.md and docs/CONFIG.md.
//
// The client commands write nothing a terminal acts on that the admin API
// sent: a string with a control, format or non-UTF-8 character is shown
// Go-quoted ("\x1b[31m"), and --json escapes them as \u sequences
// (term.go). User names are given to the API as typed and shown as the
// gateway keys them (internal/username: Alice is alice).
//
// Only this command and its app package read flags and build concrete
// types; the other packages take interfaces and options.
package main
