package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// FIBWatch follows a namespace's kernel routing table through netlink
// route events, timestamping each change as it arrives: benchmarks measure
// when a route reaches a router's forwarding table, not when a CLI polled
// it. Routes must carry their next hops inline (FRR: no zebra nexthop
// kernel enable), which the seed-000 routers do.
type FIBWatch struct {
	mu     sync.Mutex
	cond   *sync.Cond
	routes map[netip.Addr][]netip.Addr // host route → gateways
	match  func(dst netip.Addr, hops []netip.Addr) bool
	count  int // routes for which match holds
	at     time.Time
	err    error
	done   chan struct{}
}

// WatchFIB starts watching IPv4/IPv6 routes of ns (existing ones included).
func (l *Lab) WatchFIB(ns string) (*FIBWatch, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	w := &FIBWatch{routes: map[netip.Addr][]netip.Addr{}, done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	ch := make(chan netlink.RouteUpdate, 65536)
	err = netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{
		Namespace:              &h,
		ListExisting:           true,
		ReceiveBufferSize:      32 << 20,
		ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			w.cond.Broadcast()
		},
	})
	_ = h.Close()
	if err != nil {
		return nil, fmt.Errorf("subscribing to routes of %s: %w", ns, err)
	}
	go w.run(ch)
	l.OnClose(func() error { w.Close(); return nil })
	return w, nil
}

// Close stops watching.
func (w *FIBWatch) Close() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

func (w *FIBWatch) run(ch <-chan netlink.RouteUpdate) {
	for u := range ch {
		now := time.Now()
		if u.Dst == nil {
			continue
		}
		ones, bits := u.Dst.Mask.Size()
		if ones != bits {
			continue
		}
		dst, ok := netip.AddrFromSlice(u.Dst.IP)
		if !ok {
			continue
		}
		dst = dst.Unmap()
		var hops []netip.Addr
		if u.Type == unix.RTM_NEWROUTE {
			hops = gateways(u.Route)
		}
		w.mu.Lock()
		before := w.match != nil && w.matches(dst)
		if u.Type == unix.RTM_NEWROUTE {
			w.routes[dst] = hops
		} else {
			delete(w.routes, dst)
		}
		after := w.match != nil && w.matches(dst)
		if before != after {
			if after {
				w.count++
			} else {
				w.count--
			}
			w.at = now
		}
		w.mu.Unlock()
		w.cond.Broadcast()
	}
}

func gateways(r netlink.Route) []netip.Addr {
	var out []netip.Addr
	add := func(ip []byte) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	if r.Gw != nil {
		add(r.Gw)
	}
	for _, nh := range r.MultiPath {
		if nh.Gw != nil {
			add(nh.Gw)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (w *FIBWatch) matches(dst netip.Addr) bool {
	hops, ok := w.routes[dst]
	return ok && w.match(dst, hops)
}

// Hops returns the gateways of the route to dst (nil: no route).
func (w *FIBWatch) Hops(dst netip.Addr) []netip.Addr {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.routes[dst])
}

// Match sets the predicate counted by Count and WaitCount.
func (w *FIBWatch) Match(pred func(dst netip.Addr, hops []netip.Addr) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.match, w.count = pred, 0
	for dst := range w.routes {
		if w.matches(dst) {
			w.count++
		}
	}
	w.at = time.Now()
}

// Count is how many routes satisfy the predicate now.
func (w *FIBWatch) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// WaitCount waits until ok(count) holds and returns when the route event
// that made it hold arrived.
func (w *FIBWatch) WaitCount(ctx context.Context, ok func(int) bool) (time.Time, error) {
	stop := context.AfterFunc(ctx, func() { w.cond.Broadcast() })
	defer stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for !ok(w.count) {
		if w.err != nil {
			return time.Time{}, w.err
		}
		if ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("%d routes match: %w", w.count, ctx.Err())
		}
		w.cond.Wait()
	}
	return w.at, nil
}
