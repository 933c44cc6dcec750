package cloud

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"slices"
	"sort"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cloud-provider/api"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// Reserved claims take the IPClaim round trip off the allocation path.
//
// Without them a new Service waits for two writes in a row: its IPClaim
// (the API server arbitrates the address) and then its status. With them
// the leader keeps Options.Reservations claims per usable pool created ahead
// of demand, marked spec.reservedBy with this process's identity and without
// owners. A new Service is handed such an address straight away: the
// controller writes its status at once, and only then is the claim bound
// (owners set, reservedBy cleared, conditional on its resourceVersion).
//
// Why this never yields a duplicate: a reserved claim exists at the API
// server before its address is handed out, so no other writer can claim the
// address; only the process named in reservedBy binds it; and only a leader
// reserves (Options.Reservations is 0 without leader election), so a
// reservation left by an earlier leader belongs to a process that stopped
// acting before this one started. When a leader starts it binds each such
// reservation to the Service whose status shows the address (a crash
// between the status write and the bind). The others stay held for
// Options.ForeignGrace, longer than the API server lets a request run, so a
// status write the earlier leader sent just before it stopped has landed
// (and is followed: followRecorded binds the reservation it shows) before
// the reservation is deleted and its address reused.

// newIdentity names this process in the reservations it makes.
func newIdentity() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "_" + hex.EncodeToString(b)
}

// reservationOwner is the allocator key under which an address reserved by
// another process is recorded, so it is not handed out (keys of Services
// always contain a "/" after a namespace, which cannot start with "@").
func reservationOwner(identity string) ipam.ServiceKey {
	return ipam.ServiceKey("@reserved-by:" + identity)
}

func isReservation(c *v1alpha2.IPClaim) bool {
	return c.Spec.ReservedBy != "" && len(c.Spec.Owners) == 0
}

func (p *Provider) isMyReservation(c *v1alpha2.IPClaim) bool {
	return isReservation(c) && c.Spec.ReservedBy == p.identity
}

// reserveLoop keeps the reservations topped up and drops those of pools
// that were removed, disabled or shrunk.
func (p *Provider) reserveLoop(ctx context.Context) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		p.reconcileReservations(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.reserveDirty:
		case <-tick.C:
		}
	}
}

func (p *Provider) reconcileReservations(ctx context.Context) {
	logger := klog.FromContext(ctx)
	p.sweepForeign(ctx)
	logger.V(5).Info("Reconciling address reservations", "perPool", p.opts.Reservations)
	for _, x := range p.alloc.StaleReservations() {
		if err := p.dropReservation(ctx, x); err != nil {
			logger.Error(err, "Releasing a reserved address of a changed pool failed", "address", x)
		}
	}
	if wait := p.refillWait(); wait > 0 {
		time.AfterFunc(wait, func() { signal(p.reserveDirty) })
		return
	}
	set := p.pools.Load()
	names := make([]string, 0, len(set.byName))
	for n, pl := range set.byName {
		if pl.problem == "" && !pl.eip.Spec.Disable {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		for p.alloc.Reservations(n) < p.opts.Reservations && ctx.Err() == nil {
			if !p.reserveOne(ctx, n) {
				break
			}
		}
	}
}

// refillWait is how long used reservations wait before they are replaced:
// until no address was handed out for afterIdle. A reservation costs two
// writes (its creation, then the bind to the Service that took it), a claim
// made at allocation one (created with its owner), so during a burst,
// once the reservations are used up, the burst's Services are claimed at
// allocation (a round trip more each, a write less each) and the
// reservations are topped up when the burst is over, ready for the next
// Service that arrives alone, which is the one whose latency they are for.
func (p *Provider) refillWait() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if idle := time.Since(p.lastAlloc); idle < afterIdle {
		return afterIdle - idle
	}
	return 0
}

// reserveOne reserves the lowest free address of pool and creates its
// reserved claim; false when there is nothing (more) to do for the pool now.
func (p *Provider) reserveOne(ctx context.Context, pool string) bool {
	// Reserve and register under p.mu, so whoever is handed x while its
	// claim is being created finds what to wait for (settlePending).
	p.mu.Lock()
	x, err := p.alloc.Reserve(pool)
	if err != nil {
		p.mu.Unlock()
		return false // exhausted or disabled: nothing to reserve
	}
	done := make(chan struct{})
	p.reserving[x] = done
	p.mu.Unlock()
	ok := false
	defer func() {
		p.alloc.ReservationDone(x, ok)
		p.mu.Lock()
		delete(p.reserving, x)
		p.mu.Unlock()
		close(done)
	}()
	name := v1alpha2.ClaimName(x)
	err = p.cluster.CreateClaim(ctx, &v1alpha2.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha2.IPClaimSpec{
			Address:    x.String(),
			Pool:       pool,
			ReservedBy: p.identity,
			Owners:     []v1alpha2.ClaimOwner{},
		},
	})
	switch {
	case err == nil:
		ok = true
		klog.FromContext(ctx).V(4).Info("Reserved an address ahead of demand", "address", x, "pool", pool)
		return true
	case apierrors.IsAlreadyExists(err):
		c, gerr := p.cluster.LiveClaim(ctx, name)
		if gerr == nil && p.isMyReservation(c) {
			ok = true
			return true
		}
		if gerr != nil {
			klog.FromContext(ctx).Error(gerr, "Reading a claim that appeared under a reservation failed", "claim", name)
			return false
		}
		// Someone holds it that this allocator did not know about: learn
		// the holder (once x is back in the pool) and try the next address.
		defer p.lb.recordForeign(c)
		return true
	default:
		klog.FromContext(ctx).Error(err, "Creating a reserved IPClaim failed", "claim", name, "pool", pool)
		return false
	}
}

// settlePending waits for the claims of addresses Allocate handed out while
// their reservation was still being created (the pool's lowest address was
// being reserved at that moment) and returns the assignments as they stand
// then: Reserved if the reservation was confirmed, plain (to be claimed
// now) if it failed.
func (p *Provider) settlePending(ctx context.Context, key ipam.ServiceKey, as []ipam.Assignment) ([]ipam.Assignment, error) {
	if !slices.ContainsFunc(as, func(a ipam.Assignment) bool { return a.Pending }) {
		return as, nil
	}
	for _, a := range as {
		if !a.Pending {
			continue
		}
		p.mu.Lock()
		done := p.reserving[a.Addr]
		p.mu.Unlock()
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.alloc.Release(key)
			return nil, api.NewRetryError(fmt.Sprintf("the reservation of %s is taking long", a.Addr), time.Second)
		case <-ctx.Done():
			p.alloc.Release(key)
			return nil, ctx.Err()
		}
	}
	return p.alloc.Lookup(key), nil
}

// dropReservation deletes this process's reserved claim of x (if it is
// still one) and returns x to the allocator.
func (p *Provider) dropReservation(ctx context.Context, x netip.Addr) error {
	c, err := p.cluster.LiveClaim(ctx, v1alpha2.ClaimName(x))
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	case p.isMyReservation(c):
		if err := p.cluster.DeleteClaim(ctx, c); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting reserved IPClaim %s: %w", c.Name, err)
		}
	default:
		p.alloc.Unreserve(x)
		p.lb.recordForeign(c)
		return nil
	}
	p.alloc.Unreserve(x)
	return nil
}

// foreignHold is an earlier leader's reservation held at start.
type foreignHold struct {
	identity string
	since    time.Time
}

func (p *Provider) holdForeign(x netip.Addr, identity string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.foreign[x] = foreignHold{identity: identity, since: time.Now()}
	time.AfterFunc(p.opts.ForeignGrace+100*time.Millisecond, func() { signal(p.reserveDirty) })
}

// forgetForeign drops x from the held reservations once a Service has it.
func (p *Provider) forgetForeign(x netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.foreign, x)
}

// sweepForeign deletes earlier leaders' reservations that no Service took
// within the grace period and returns their addresses to the pools.
func (p *Provider) sweepForeign(ctx context.Context) {
	logger := klog.FromContext(ctx)
	p.mu.Lock()
	due := map[netip.Addr]foreignHold{}
	for x, h := range p.foreign {
		if time.Since(h.since) >= p.opts.ForeignGrace {
			due[x] = h
		}
	}
	p.mu.Unlock()
	if len(due) == 0 {
		return
	}
	shown := map[netip.Addr]bool{}
	svcs, err := p.cluster.Services(ctx)
	if err != nil {
		logger.Error(err, "Listing Services to sweep earlier leaders' reservations failed")
		return
	}
	for _, s := range svcs {
		for _, a := range statusAddrs(s) {
			if _, ok := due[a]; ok {
				shown[a] = true
			}
		}
	}
	for x, h := range due {
		if shown[x] {
			// Its Service's sync follows it (followRecorded); look again
			// next time.
			continue
		}
		c, err := p.cluster.LiveClaim(ctx, v1alpha2.ClaimName(x))
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			logger.Error(err, "Reading an earlier leader's reservation failed", "address", x)
			continue
		case isReservation(c) && c.Spec.ReservedBy == h.identity:
			if err := p.cluster.DeleteClaim(ctx, c); err != nil && !apierrors.IsNotFound(err) {
				logger.Error(err, "Deleting an earlier leader's reservation failed", "claim", c.Name)
				continue
			}
			logger.Info("Deleted a reservation an earlier leader left unused", "claim", c.Name, "reservedBy", h.identity)
		default:
			// Bound meanwhile: whoever holds it now is recorded.
			p.lb.recordForeign(c)
		}
		p.alloc.ReleaseAddr(reservationOwner(h.identity), x)
		p.forgetForeign(x)
		signal(p.statusDirty)
	}
}

// afterStatus is bookkeeping that waits until the allocations are done:
// binding the claims of addresses handed out from reservations, and the
// allocation event. Neither is on the path to the Service's address: the
// address is safe from the moment its reserved claim exists, and the status
// is what users wait for. Running them while Services are still arriving
// would only make those Services' writes queue behind them in the API
// server, so they run once no address was handed out for afterIdle, or at
// the latest afterMaxAge after the allocation (a steady stream of
// Services). A leader that stops before binding leaves nothing wrong: the
// next one binds every reservation a Service's status shows.
type afterStatus struct {
	svc   *v1.Service
	req   ipam.Request
	binds []ipam.Assignment
	event string
	since time.Time
}

const (
	afterIdle = 100 * time.Millisecond
	// afterMaxAge outlasts a burst of a thousand Services on a small API
	// server (6-7 s on two cores), so none of its events and binds compete
	// with its creates and status writes.
	afterMaxAge = 15 * time.Second
)

// deferAfterStatus records bookkeeping for afterLoop. The caller holds the
// Service's key lock. With nothing new to do it still hands a pending bind
// the Service's latest request: the bind writes the Service's ports into the
// claim, and ports changed while the bind waited must not be lost (nothing
// else writes them: the address is kept, so the sync makes no claim).
func (p *Provider) deferAfterStatus(key ipam.ServiceKey, svc *v1.Service, req ipam.Request, binds []ipam.Assignment, event string) {
	p.mu.Lock()
	if len(binds) == 0 && event == "" {
		if w := p.after[key]; w != nil {
			w.svc, w.req = svc, req
		}
		p.mu.Unlock()
		return
	}
	now := time.Now()
	p.lastAlloc = now
	w := p.after[key]
	if w == nil {
		w = &afterStatus{since: now}
		p.after[key] = w
	}
	w.svc, w.req = svc, req
	w.binds = append(w.binds, binds...)
	if event != "" {
		w.event = event
	}
	p.mu.Unlock()
	signal(p.afterKick)
	if len(binds) > 0 {
		signal(p.reserveDirty) // a reservation was used: replace it now
	}
}

func (p *Provider) takeAfterStatus(key ipam.ServiceKey) *afterStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.after[key]
	delete(p.after, key)
	return w
}

// runAfterStatus needs the key lock held.
func (p *Provider) runAfterStatus(ctx context.Context, key ipam.ServiceKey) {
	w := p.takeAfterStatus(key)
	if w == nil {
		return
	}
	var failed []ipam.Assignment
	for _, a := range w.binds {
		if !slices.Contains(p.alloc.Owners(a.Addr), key) {
			continue // released meanwhile; the reservation stands
		}
		if err := p.claim(ctx, w.svc, a, w.req, false); err != nil {
			klog.FromContext(ctx).Error(err, "Binding the claim of a reserved address failed; retrying", "service", key, "address", a.Addr)
			failed = append(failed, a)
		}
	}
	if w.event != "" {
		p.cluster.Event(w.svc, v1.EventTypeNormal, ReasonAllocated, w.event)
		metricAllocations.WithLabelValues(ReasonAllocated).Inc()
	}
	if len(failed) > 0 {
		p.deferAfterStatus(key, w.svc, w.req, failed, "")
	}
}

// afterLoop runs the deferred bookkeeping (see afterStatus).
func (p *Provider) afterLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.afterKick:
		case <-timer.C:
		}
		if next := p.runDueAfterStatus(ctx); next > 0 {
			timer.Reset(next)
		}
	}
}

// runDueAfterStatus runs what is due and says when to look again (0:
// nothing pending).
func (p *Provider) runDueAfterStatus(ctx context.Context) time.Duration {
	p.mu.Lock()
	now := time.Now()
	idle := now.Sub(p.lastAlloc)
	var due []ipam.ServiceKey
	next := time.Duration(0)
	for k, w := range p.after {
		age := now.Sub(w.since)
		if idle >= afterIdle || age >= afterMaxAge {
			due = append(due, k)
			continue
		}
		if wait := min(afterIdle-idle, afterMaxAge-age); next == 0 || wait < next {
			next = wait
		}
	}
	p.mu.Unlock()
	for _, k := range due {
		unlock := p.lockKey(k)
		p.runAfterStatus(ctx, k)
		unlock()
	}
	if len(due) > 0 {
		p.mu.Lock()
		if len(p.after) > 0 && next == 0 {
			next = afterIdle // failed binds, re-deferred
		}
		p.mu.Unlock()
	}
	return next
}

// cancelAfterStatus drops the deferred work of a Service that is released
// before its status write: its unbound addresses return to the
// reservations. The allocation event is still emitted, so the release that
// follows it is not reported alone.
func (p *Provider) cancelAfterStatus(key ipam.ServiceKey) {
	w := p.takeAfterStatus(key)
	if w != nil && w.event != "" {
		p.cluster.Event(w.svc, v1.EventTypeNormal, ReasonAllocated, w.event)
		metricAllocations.WithLabelValues(ReasonAllocated).Inc()
	}
}

// keyLocks serialise the provider's work on one Service: allocation,
// release and the deferred binds. Striped, so memory stays fixed.
const keyLockStripes = 64

func (p *Provider) lockKey(key ipam.ServiceKey) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	m := &p.keyMu[h.Sum32()%keyLockStripes]
	m.Lock()
	return m.Unlock
}
