package redisstate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/poolgate/poolgate/balancer"
)

// View implements balancer.Shared: the whole pool's live sessions, pins
// and drains, in two round trips. Leases past their expiry are dropped on
// the way.
func (s *Store) View(ctx context.Context) (balancer.View, error) {
	P, now := s.prefix, time.Now()
	pipe := s.rdb.Pipeline()
	pipe.ZRemRangeByScore(ctx, P+"leases", "-inf", strconv.FormatInt(ms(now), 10))
	leasesCmd := pipe.ZRangeByScore(ctx, P+"leases", &redis.ZRangeBy{Min: after(now), Max: "+inf"})
	drainCmd := pipe.SMembers(ctx, P+"drain")
	nodesCmd := pipe.SMembers(ctx, P+"nodes")
	pinsCmd := pipe.HGetAll(ctx, P+"pins")
	if _, err := pipe.Exec(ctx); err != nil {
		return balancer.View{}, fmt.Errorf("redis view: %w", err)
	}
	pipe = s.rdb.Pipeline()
	keys := leasesCmd.Val()
	leaseCmds := make([]*redis.SliceCmd, len(keys))
	for i, k := range keys {
		leaseCmds[i] = pipe.HMGet(ctx, P+"lease:"+k, "user", "node", "proto", "client", "started", "replica")
	}
	nodes := nodesCmd.Val()
	idleCmds := make([]*redis.StringCmd, len(nodes))
	for i, n := range nodes {
		idleCmds[i] = pipe.Get(ctx, P+"idle:"+n)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return balancer.View{}, fmt.Errorf("redis view: %w", err)
	}
	v := balancer.View{Nodes: map[string]balancer.NodeView{}}
	users := map[string]map[string]bool{}
	for i, k := range keys {
		f := leaseCmds[i].Val()
		str := func(j int) string { s, _ := f[j].(string); return s }
		user, node := str(0), str(1)
		if user == "" || node == "" {
			continue // expired between the two reads
		}
		_, idStr, _ := strings.Cut(k, "/")
		id, _ := strconv.ParseUint(idStr, 10, 64)
		started, _ := strconv.ParseInt(str(4), 10, 64)
		proto := balancer.Protocol(str(2))
		v.Sessions = append(v.Sessions, balancer.SessionInfo{ID: id, User: user, Node: node, Protocol: proto, Client: str(3), Started: time.UnixMilli(started), Replica: str(5)})
		nv := v.Nodes[node]
		for i, p := range balancer.Protocols() {
			if p == proto {
				nv.Sessions[i]++
			}
		}
		v.Nodes[node] = nv
		if users[node] == nil {
			users[node] = map[string]bool{}
		}
		users[node][user] = true
	}
	for node, us := range users {
		nv := v.Nodes[node]
		for u := range us {
			nv.Users = append(nv.Users, u)
		}
		v.Nodes[node] = nv
	}
	for i, n := range nodes {
		nv := v.Nodes[n]
		if idle, err := strconv.ParseInt(idleCmds[i].Val(), 10, 64); err == nil && idle > 0 && nv.Sessions.Total() == 0 {
			nv.IdleSince = time.UnixMilli(idle)
		}
		v.Nodes[n] = nv
	}
	for _, n := range drainCmd.Val() {
		nv := v.Nodes[n]
		nv.Draining = true
		v.Nodes[n] = nv
	}
	for _, raw := range pinsCmd.Val() {
		if vp, err := decodePin(raw); err == nil && vp.Node != "" && now.Before(vp.Until) {
			nv := v.Nodes[vp.Node]
			nv.Pinned++
			v.Nodes[vp.Node] = nv
		}
	}
	return v, nil
}

// watchPing is how long Watch waits on a quiet subscription before it
// pings; a ping unanswered for as long again ends the subscription, and
// Watch subscribes anew.
const watchPing = 15 * time.Second

// Watch implements balancer.Shared: it passes each pin notice to
// n.PinNotice until ctx ends. It calls n.SetPinNotices(true) each time
// its subscription is confirmed and n.SetPinNotices(false) when it is
// lost, since notices are missed while it is; it subscribes again after a
// break, waiting up to 5 s between tries. Balancer.RunShared runs it.
func (s *Store) Watch(ctx context.Context, n balancer.PinNotices) {
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		start := time.Now()
		s.watchOnce(ctx, n)
		n.SetPinNotices(false)
		if time.Since(start) > time.Minute {
			wait = 0
		}
		wait = min(max(2*wait, 100*time.Millisecond), 5*time.Second)
	}
}

// watchOnce holds one subscription until it breaks or ctx ends.
func (s *Store) watchOnce(ctx context.Context, n balancer.PinNotices) {
	sub := s.rdb.Subscribe(ctx, s.prefix+"pins")
	defer sub.Close()
	// Closing the subscription ends a Receive that waits.
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() })
	defer stop()
	pinged := false
	for {
		msg, err := sub.ReceiveTimeout(ctx, watchPing)
		var nerr net.Error
		switch {
		case err == nil:
		case errors.As(err, &nerr) && nerr.Timeout() && !pinged:
			pinged = true
			if sub.Ping(ctx) != nil {
				return
			}
			continue
		default:
			return
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				n.SetPinNotices(true)
			}
		case *redis.Message:
			if user, vp, err := decodeNotice(m.Payload); err == nil {
				n.PinNotice(user, vp.Pin, vp.Ver)
			}
		}
	}
}
