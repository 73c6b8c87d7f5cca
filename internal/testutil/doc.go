// Package testutil holds the helpers that tests across poolgate share:
// waiting for a condition ([Eventually]), a goroutine-safe buffer for
// output that a server writes while a test reads it ([SyncBuffer]), a
// loopback listener that serves each connection with a function
// ([ServeTCP]), and reading one series of a Prometheus registry
// ([MetricValue]).
//
// It is imported by _test.go files only, and imports nothing of poolgate.
package testutil
