package sshgw

import (
	"sync"

	"golang.org/x/crypto/ssh"
)

// requestQueue forwards requests in arrival order from a worker goroutine
// that exists only while requests are pending, so a far side that is slow
// to reply never stalls the near side's read loop (x/crypto stops reading
// a connection once one request channel's small buffer is full).
type requestQueue struct {
	handle  func(*ssh.Request)
	mu      sync.Mutex // protects pending and running
	pending []*ssh.Request
	running bool
	idle    sync.WaitGroup // held while a worker runs
}

func newRequestQueue(handle func(*ssh.Request)) *requestQueue {
	return &requestQueue{handle: handle}
}

// maxPendingRequests bounds a queue; past it the request is refused at
// once rather than held without limit.
const maxPendingRequests = 1024

func (q *requestQueue) push(r *ssh.Request) {
	q.mu.Lock()
	if len(q.pending) >= maxPendingRequests {
		q.mu.Unlock()
		if r.WantReply {
			_ = r.Reply(false, nil)
		}
		return
	}
	q.pending = append(q.pending, r)
	if q.running {
		q.mu.Unlock()
		return
	}
	q.running = true
	q.idle.Add(1)
	q.mu.Unlock()
	go q.work()
}

func (q *requestQueue) work() {
	defer q.idle.Done()
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.running = false
			q.pending = nil
			q.mu.Unlock()
			return
		}
		r := q.pending[0]
		q.pending[0] = nil
		q.pending = q.pending[1:]
		q.mu.Unlock()
		q.handle(r)
	}
}

// wait returns once no worker is running.
func (q *requestQueue) wait() { q.idle.Wait() }
