// Package redistest runs a real redis-server on a loopback port for tests.
package redistest
