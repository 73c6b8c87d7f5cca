package redisstate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/poolgate/poolgate/balancer"
)

// The shared state lives under one prefix whose hash tag ({poolgate} by
// default) puts every key in one cluster slot, so each transaction is
// atomic on a clustered Redis too. Times are Unix milliseconds; a lease
// key is "<replica>/<id>".
//
//	P.."pin:"..user          the user's pin (see encodePin); each Update
//	                         watches the pins it reads, so one that went
//	                         stale fails and decides again
//	P.."pins"                hash user → pin: the same pins, for a read of
//	                         the whole table
//	P.."placed"              counts placements and drains: an Update that
//	                         places by the pool's counts watches it
//	P.."drain"               set of drained nodes
//	P.."nodes"               set of nodes ever seen
//	P.."node:"..node..":"..p zset lease → expiry: the node's live leases of protocol p
//	P.."user:"..user         zset lease → expiry
//	P.."replica:"..r         zset lease → expiry: one gateway's leases
//	P.."leases"              zset lease → expiry: every lease
//	P.."lease:"..lease       hash user node proto client started replica
//	P.."idle:"..node         when the node's last lease ended
//	channel P.."pins"        a notice per pin written (see encodeNotice)
//
// Leases past their expiry are not counted, so the sessions of a gateway
// that died leave the counts within the lease TTL; its users' pins end a
// grace after their leases' last expiry.

// maxAttempts bounds how often an Update decides again after another
// gateway changed the state under it.
const maxAttempts = 32

// conflictPause is how long an Update steps aside after losing its
// attempt-th compare-and-set: a random moment up to 50 µs, doubling with
// each loss up to 2 ms.
func conflictPause(attempt int) time.Duration {
	ceil := min(50*time.Microsecond<<min(attempt, 6), 2*time.Millisecond)
	return time.Duration(rand.Int64N(int64(ceil)))
}

// ErrContended means an Update lost every compare-and-set to other
// gateways' updates.
var ErrContended = errors.New("redis update: the shared state kept changing under this gateway's decision")

// Update implements balancer.Shared: an optimistic transaction. It
// watches the version, reads the snapshot r asks for, lets decide choose,
// and writes the change with the version raised; if another gateway wrote
// in between, EXEC fails and it reads and decides again.
func (s *Store) Update(ctx context.Context, r balancer.Read, decide func(*balancer.Snapshot) (balancer.Change, error)) (uint64, error) {
	for attempt := range maxAttempts {
		var ver uint64
		var refused error
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			snap, cur, err := s.read(ctx, tx, r)
			if err != nil {
				return err
			}
			ch, err := decide(snap)
			if err != nil {
				refused = err
				return nil
			}
			// Versions follow the clock, so they keep rising when Redis
			// lost its data and starts over; above every pin read, so
			// each user's keep rising.
			ver = max(cur+1, uint64(r.Now.UnixMicro()))
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				s.write(ctx, p, r, ch, ver)
				return nil
			})
			return err
		}, s.watched(r)...)
		switch {
		case refused != nil:
			return 0, refused
		case errors.Is(err, redis.TxFailedErr):
			// Another gateway wrote first: step aside for a random
			// moment, growing with each loss, so racing writers spread
			// out rather than collide again.
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("redis update: %w", ctx.Err())
			case <-time.After(conflictPause(attempt)):
			}
			continue
		case err != nil:
			return 0, fmt.Errorf("redis update: %w", err)
		}
		return ver, nil
	}
	return 0, ErrContended
}

// watched are the keys whose change makes r's snapshot stale: the pins
// it reads, and for a placement the placement count.
func (s *Store) watched(r balancer.Read) []string {
	keys := make([]string, 0, len(r.Users)+1)
	for _, u := range r.Users {
		keys = append(keys, s.prefix+"pin:"+u)
	}
	if r.Placing || len(keys) == 0 {
		keys = append(keys, s.prefix+"placed")
	}
	return keys
}

func (s *Store) nodeKey(node string, p balancer.Protocol) string {
	return s.prefix + "node:" + node + ":" + string(p)
}
func (s *Store) leaseKey(id uint64) string { return s.replica + "/" + strconv.FormatUint(id, 10) }
func ms(t time.Time) int64                 { return t.UnixMilli() }
func after(t time.Time) string             { return "(" + strconv.FormatInt(ms(t), 10) }

// read reads what r asks for on the watching connection.
func (s *Store) read(ctx context.Context, tx *redis.Tx, r balancer.Read) (*balancer.Snapshot, uint64, error) {
	P, now := s.prefix, r.Now
	without := make(map[string]bool, len(r.Without))
	for _, id := range r.Without {
		without[s.leaseKey(id)] = true
	}
	live := func(cmd *redis.StringSliceCmd) int {
		n := 0
		for _, k := range cmd.Val() {
			if !without[k] {
				n++
			}
		}
		return n
	}
	alive := &redis.ZRangeBy{Min: after(now), Max: "+inf"}
	protos := balancer.Protocols()
	pipe := tx.Pipeline()
	pinCmds := make([]*redis.StringCmd, len(r.Users))
	userCmds := make([]*redis.StringSliceCmd, len(r.Users))
	for i, u := range r.Users {
		pinCmds[i] = pipe.Get(ctx, P+"pin:"+u)
		userCmds[i] = pipe.ZRangeByScore(ctx, P+"user:"+u, alive)
	}
	nodeCmds := make([][]*redis.StringSliceCmd, len(r.Nodes))
	for i, n := range r.Nodes {
		for _, p := range protos {
			nodeCmds[i] = append(nodeCmds[i], pipe.ZRangeByScore(ctx, s.nodeKey(n, p), alive))
		}
	}
	drainCmd := pipe.SMembers(ctx, P+"drain")
	var mineCmd *redis.StringSliceCmd
	if r.Mine {
		mineCmd = pipe.ZRange(ctx, P+"replica:"+s.replica, 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, err
	}
	snap := &balancer.Snapshot{
		Now:      now,
		Pins:     make(map[string]balancer.Pin, len(r.Users)),
		Live:     make(map[string]int, len(r.Users)),
		Sessions: make(map[string]balancer.PerProtocol, len(r.Nodes)),
		Draining: map[string]bool{},
	}
	var cur uint64 // the highest version of the pins read
	for i, u := range r.Users {
		if raw := pinCmds[i].Val(); raw != "" {
			if vp, err := decodePin(raw); err == nil {
				snap.Pins[u] = vp.Pin
				cur = max(cur, vp.Ver)
			}
		}
		snap.Live[u] = live(userCmds[i])
	}
	for i, n := range r.Nodes {
		var c balancer.PerProtocol
		for j := range protos {
			c[j] = live(nodeCmds[i][j])
		}
		snap.Sessions[n] = c
	}
	for _, n := range drainCmd.Val() {
		snap.Draining[n] = true
	}
	if mineCmd != nil {
		mine, err := s.readLeases(ctx, tx, mineCmd.Val())
		if err != nil {
			return nil, 0, err
		}
		snap.Mine = mine
	}
	return snap, cur, nil
}

// readLeases reads this gateway's lease records by key.
func (s *Store) readLeases(ctx context.Context, tx *redis.Tx, keys []string) ([]balancer.LeaseRecord, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	pipe := tx.Pipeline()
	cmds := make([]*redis.SliceCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.HMGet(ctx, s.prefix+"lease:"+k, "user", "node", "proto")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]balancer.LeaseRecord, 0, len(keys))
	for i, k := range keys {
		_, idStr, _ := strings.Cut(k, "/")
		id, _ := strconv.ParseUint(idStr, 10, 64)
		v := cmds[i].Val()
		str := func(j int) string { s, _ := v[j].(string); return s }
		out = append(out, balancer.LeaseRecord{ID: id, User: str(0), Node: str(1), Proto: balancer.Protocol(str(2))})
	}
	return out, nil
}

// write queues ch in the transaction.
func (s *Store) write(ctx context.Context, p redis.Pipeliner, r balancer.Read, ch balancer.Change, ver uint64) {
	P, now := s.prefix, r.Now
	if r.Placing || len(ch.Drain) > 0 {
		p.Incr(ctx, P+"placed")
	}
	for user, pin := range ch.Pins {
		if pin == (balancer.Pin{}) {
			p.Del(ctx, P+"pin:"+user)
			p.HDel(ctx, P+"pins", user)
		} else {
			enc := encodePin(balancer.VersionedPin{Pin: pin, Ver: ver})
			p.Set(ctx, P+"pin:"+user, enc, 0)
			if pin.Until.After(now) {
				p.PExpireAt(ctx, P+"pin:"+user, pin.Until)
			}
			p.HSet(ctx, P+"pins", user, enc)
		}
		p.Publish(ctx, P+"pins", encodeNotice(s.replica, user, balancer.VersionedPin{Pin: pin, Ver: ver}))
	}
	exp := float64(ms(now.Add(s.ttl)))
	for _, l := range ch.Put {
		k := s.leaseKey(l.ID)
		if l.User != balancer.Unverified {
			// A held session (balancer.Hold) counts in the view only:
			// the rules read these two sets.
			p.ZAdd(ctx, s.nodeKey(l.Node, l.Proto), redis.Z{Score: exp, Member: k})
			p.ZRemRangeByScore(ctx, s.nodeKey(l.Node, l.Proto), "-inf", strconv.FormatInt(ms(now), 10))
			p.ZAdd(ctx, P+"user:"+l.User, redis.Z{Score: exp, Member: k})
		}
		p.ZAdd(ctx, P+"replica:"+s.replica, redis.Z{Score: exp, Member: k})
		p.ZAdd(ctx, P+"leases", redis.Z{Score: exp, Member: k})
		p.HSet(ctx, P+"lease:"+k, "user", l.User, "node", l.Node, "proto", string(l.Proto), "client", l.Client, "started", ms(l.Started), "replica", s.replica)
		p.PExpireAt(ctx, P+"lease:"+k, time.UnixMilli(int64(exp)))
		p.Del(ctx, P+"idle:"+l.Node)
		p.SAdd(ctx, P+"nodes", l.Node)
	}
	for _, l := range ch.Drop {
		k := s.leaseKey(l.ID)
		p.ZRem(ctx, s.nodeKey(l.Node, l.Proto), k)
		p.ZRem(ctx, P+"user:"+l.User, k)
		p.ZRem(ctx, P+"replica:"+s.replica, k)
		p.ZRem(ctx, P+"leases", k)
		p.Del(ctx, P+"lease:"+k)
	}
	for _, n := range ch.Idle {
		p.Set(ctx, P+"idle:"+n, ms(now), 0)
	}
	for n, on := range ch.Drain {
		if on {
			p.SAdd(ctx, P+"drain", n)
		} else {
			p.SRem(ctx, P+"drain", n)
		}
		p.SAdd(ctx, P+"nodes", n)
	}
}

// PinTable implements balancer.Shared: every pin that holds at now. Pins
// past their end are deleted on the way, unless the state changed while
// they were read.
func (s *Store) PinTable(ctx context.Context, now time.Time) (map[string]balancer.VersionedPin, error) {
	raw, err := s.rdb.HGetAll(ctx, s.prefix+"pins").Result()
	if err != nil {
		return nil, fmt.Errorf("redis pin table: %w", err)
	}
	out := map[string]balancer.VersionedPin{}
	var ended []string
	for user, v := range raw {
		vp, err := decodePin(v)
		if err != nil || !now.Before(vp.Until) {
			ended = append(ended, user)
			continue
		}
		out[user] = vp
	}
	for _, user := range ended {
		s.pruneEnded(ctx, user, raw[user])
	}
	return out, nil
}

// pruneEnded deletes a user's ended pin from the table, unless another
// gateway wrote the user's pin since it was read (the pin key itself
// expires on its own).
func (s *Store) pruneEnded(ctx context.Context, user, read string) {
	key := s.prefix + "pin:" + user
	_ = s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		if cur, err := tx.Get(ctx, key).Result(); err == nil && cur != read {
			return nil
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HDel(ctx, s.prefix+"pins", user)
			return nil
		})
		return err
	}, key)
}

// encodePin writes a pin as Redis holds it: node, until (ms), by, lost
// and version, separated by tabs (none of them holds a tab: user and node
// names are checked where they enter).
func encodePin(vp balancer.VersionedPin) string {
	return strings.Join([]string{vp.Node, strconv.FormatInt(ms(vp.Until), 10), string(vp.By), vp.Lost, strconv.FormatUint(vp.Ver, 10)}, "\t")
}

// decodePin reads what encodePin wrote, as any gateway (or a person with
// redis-cli) may have left it.
func decodePin(raw string) (balancer.VersionedPin, error) {
	f := strings.Split(raw, "\t")
	if len(f) != 5 {
		return balancer.VersionedPin{}, fmt.Errorf("redis pin %q: want 5 fields, got %d", raw, len(f))
	}
	until, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return balancer.VersionedPin{}, fmt.Errorf("redis pin %q: until: %w", raw, err)
	}
	ver, err := strconv.ParseUint(f[4], 10, 64)
	if err != nil {
		return balancer.VersionedPin{}, fmt.Errorf("redis pin %q: version: %w", raw, err)
	}
	return balancer.VersionedPin{Pin: balancer.Pin{Node: f[0], Until: time.UnixMilli(until), By: balancer.PinOrigin(f[2]), Lost: f[3]}, Ver: ver}, nil
}

// encodeNotice is a pin notice: the writing replica, the user, then the
// pin as encodePin writes it.
func encodeNotice(replica, user string, vp balancer.VersionedPin) string {
	return replica + "\t" + user + "\t" + encodePin(vp)
}

// decodeNotice reads a pin notice.
func decodeNotice(raw string) (user string, vp balancer.VersionedPin, err error) {
	_, rest, ok := strings.Cut(raw, "\t")
	if !ok {
		return "", vp, fmt.Errorf("redis pin notice %q: no user", raw)
	}
	user, rest, ok = strings.Cut(rest, "\t")
	if !ok || user == "" {
		return "", vp, fmt.Errorf("redis pin notice %q: no pin", raw)
	}
	vp, err = decodePin(rest)
	return user, vp, err
}
