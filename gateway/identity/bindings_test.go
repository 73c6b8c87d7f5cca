package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
)

func sshKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clock is a settable now for stores.
type clock struct {
	mu sync.Mutex // protects t
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testBindings runs one table of cases against a store.
func testBindings(t *testing.T, newStore func(t *testing.T, now func() time.Time) Bindings) {
	ctx := context.Background()
	alice := &Identity{User: "alice", Subject: "sub-a"}
	bob := &Identity{User: "bob", Subject: "sub-b"}

	t.Run("bind lookup expire", func(t *testing.T) {
		c := &clock{t: time.Now()}
		s := newStore(t, c.now)
		k := sshKey(t)
		b := NewBinding(alice, k, "192.0.2.1:50022", c.now(), 12*time.Hour)
		if err := s.Bind(ctx, b); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.Lookup(ctx, ssh.FingerprintSHA256(k))
		if err != nil || !ok || got.User != "alice" || got.Subject != "sub-a" || got.KeyType != "ssh-ed25519" ||
			got.Client != "192.0.2.1:50022" || !got.Until.Equal(b.Until) || !got.Bound.Equal(b.Bound) {
			t.Fatalf("Lookup = %+v, %v, %v", got, ok, err)
		}
		if _, ok, _ := s.Lookup(ctx, ssh.FingerprintSHA256(sshKey(t))); ok {
			t.Error("an unbound key was found")
		}
		c.add(12 * time.Hour)
		if _, ok, _ := s.Lookup(ctx, ssh.FingerprintSHA256(k)); ok {
			t.Error("found past Until")
		}
		if l, _ := s.List(ctx); len(l) != 0 {
			t.Errorf("List past Until = %+v", l)
		}
	})

	t.Run("rebind moves the key, list, revoke, forget", func(t *testing.T) {
		c := &clock{t: time.Now()}
		s := newStore(t, c.now)
		k1, k2, k3 := sshKey(t), sshKey(t), sshKey(t)
		for _, b := range []Binding{
			NewBinding(alice, k1, "c", c.now(), time.Hour),
			NewBinding(alice, k2, "c", c.now().Add(time.Second), time.Hour),
			NewBinding(bob, k3, "c", c.now(), time.Hour),
		} {
			if err := s.Bind(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		// bob signs in with alice's k2: the key is his now.
		if err := s.Bind(ctx, NewBinding(bob, k2, "c", c.now().Add(2*time.Second), time.Hour)); err != nil {
			t.Fatal(err)
		}
		l, err := s.List(ctx)
		if err != nil || len(l) != 3 || l[0].User != "alice" || l[1].User != "bob" || l[2].User != "bob" || l[2].Fingerprint != ssh.FingerprintSHA256(k2) {
			t.Fatalf("List = %+v, %v", l, err)
		}
		if n, err := s.Revoke(ctx, "alice"); err != nil || n != 1 {
			t.Fatalf("Revoke(alice) = %d, %v; want 1 (k2 is bob's now)", n, err)
		}
		if _, ok, _ := s.Lookup(ctx, ssh.FingerprintSHA256(k2)); !ok {
			t.Error("revoking alice removed bob's binding of k2")
		}
		if err := s.Forget(ctx, "alice", ssh.FingerprintSHA256(k3)); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Lookup(ctx, ssh.FingerprintSHA256(k3)); !ok {
			t.Error("Forget by another user removed the binding")
		}
		if err := s.Forget(ctx, "bob", ssh.FingerprintSHA256(k3)); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Lookup(ctx, ssh.FingerprintSHA256(k3)); ok {
			t.Error("Forget left the binding")
		}
		if n, err := s.Revoke(ctx, "bob"); err != nil || n != 1 {
			t.Errorf("Revoke(bob) = %d, %v", n, err)
		}
		if l, _ := s.List(ctx); len(l) != 0 {
			t.Errorf("List after revoking all = %+v", l)
		}
		if n, err := s.Revoke(ctx, "nobody"); err != nil || n != 0 {
			t.Errorf("Revoke(nobody) = %d, %v", n, err)
		}
	})

	t.Run("bad bindings refused", func(t *testing.T) {
		s := newStore(t, time.Now)
		for _, b := range []Binding{
			{User: "", Fingerprint: ssh.FingerprintSHA256(sshKey(t)), Until: time.Now().Add(time.Hour)},
			{User: "alice", Fingerprint: "MD5:00", Until: time.Now().Add(time.Hour)},
			{User: "alice", Fingerprint: ssh.FingerprintSHA256(sshKey(t))},
		} {
			if err := s.Bind(ctx, b); err == nil {
				t.Errorf("Bind(%+v) succeeded", b)
			}
		}
	})
}

func TestMemoryBindings(t *testing.T) {
	testBindings(t, func(t *testing.T, now func() time.Time) Bindings { return NewMemoryBindings(now) })
}

func TestRedisBindings(t *testing.T) {
	srv := redistest.Start(t)
	testBindings(t, func(t *testing.T, now func() time.Time) Bindings {
		opt, err := redis.ParseURL(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(opt)
		t.Cleanup(func() { rdb.Close() })
		if err := rdb.FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		return NewRedisBindings(rdb, "poolgate:test:identity:", now)
	})
}

// TestRedisBindingsExpireInRedis checks that Redis itself drops a binding
// at Until (its TTL), and that two gateways share bindings.
func TestRedisBindingsExpireInRedis(t *testing.T) {
	srv := redistest.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	a := NewRedisBindings(rdb, "pg:", nil)
	b := NewRedisBindings(rdb, "pg:", nil)
	k := sshKey(t)
	if err := a.Bind(ctx, NewBinding(&Identity{User: "alice", Subject: "s"}, k, "c", time.Now(), 300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Lookup(ctx, ssh.FingerprintSHA256(k)); !ok || err != nil {
		t.Fatalf("other gateway's Lookup = %v, %v", ok, err)
	}
	ttl, err := rdb.PTTL(ctx, "pg:key:"+ssh.FingerprintSHA256(k)).Result()
	if err != nil || ttl <= 0 || ttl > 300*time.Millisecond {
		t.Fatalf("PTTL = %s, %v", ttl, err)
	}
	time.Sleep(400 * time.Millisecond)
	if n, _ := rdb.Exists(ctx, "pg:key:"+ssh.FingerprintSHA256(k)).Result(); n != 0 {
		t.Error("Redis kept the binding past its TTL")
	}
}
