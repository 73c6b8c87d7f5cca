// Command poolgate is a session-aware SSH and JupyterHub gateway for a
// pool of interactive VMs (such as an Azure scale set of Data Science VMs):
// it sends each new user to the least-loaded live VM and keeps them there,
// in the terminal and the browser alike. Its subcommands run the gateway
// (serve, demo), print the user CA for the nodes (ca-pubkey), and talk to
// a running gateway's admin API (nodes, sessions, drain, undrain,
// scale-in). See README.md and docs/CONFIG.md.
//
// Only this command and its app package read flags and build concrete
// types; the other packages take interfaces and options.
package main
