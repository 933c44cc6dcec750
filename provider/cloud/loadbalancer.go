package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/api"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// Event reasons on Services. Every allocation and every refusal gets one.
const (
	ReasonAllocated         = "IPAllocated"
	ReasonReleased          = "IPReleased"
	ReasonInvalid           = "InvalidAnnotation"
	ReasonNoPool            = "NoPool"
	ReasonPoolNotFound      = "PoolNotFound"
	ReasonPoolDisabled      = "PoolDisabled"
	ReasonPoolUnsupported   = "PoolUnsupported"
	ReasonPoolExhausted     = "PoolExhausted"
	ReasonIPTaken           = "IPTaken"
	ReasonIPNotInPool       = "IPNotInPool"
	ReasonFamilyMismatch    = "FamilyMismatch"
	ReasonSharedIPPortClash = "SharedIPPortClash"
	ReasonPoolNotBound      = "PoolNotBound"
	ReasonPoolNotSelected   = "PoolNotSelected"
	// ReasonSharedIPNamespace: a Service asked for (or kept) an address
	// shared with a Service of another namespace without both opting in.
	ReasonSharedIPNamespace = "SharedIPNamespace"
	// ReasonSharedIPTrafficPolicy: Services sharing an address would mix
	// externalTrafficPolicy Local with other endpoints.
	ReasonSharedIPTrafficPolicy = "SharedIPTrafficPolicy"
	ReasonNotReady              = "ProviderNotReady"
	// ReasonReservationUnused: an address reserved for the Service
	// (IPClaim spec.reservedFor) is not used by it, and stays reserved.
	ReasonReservationUnused = "ReservationUnused"
	// ReasonInvalidReservation: an IPClaim's reservation cannot be
	// honoured (event on the IPClaim).
	ReasonInvalidReservation = "InvalidReservation"
)

// LoadBalancer gives Services addresses from Eip pools.
type LoadBalancer struct {
	p *Provider
}

var _ cloudprovider.LoadBalancer = (*LoadBalancer)(nil)

// errNotReady is returned (as a RetryError) until every held address is
// re-adopted.
var errNotReady = errors.New("the openelb provider is still re-adopting held addresses")

// Ready is the provider's Ready, on the LoadBalancer the service controller
// holds: its health check reports it (provider/controller).
func (lb *LoadBalancer) Ready() bool { return lb.p.Ready() }

func (lb *LoadBalancer) checkReady() error {
	if !lb.p.Ready() {
		return api.NewRetryError(errNotReady.Error(), retryNotReady)
	}
	return nil
}

// GetLoadBalancer reports the addresses the Service holds.
func (lb *LoadBalancer) GetLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	if err := lb.checkReady(); err != nil {
		return nil, false, err
	}
	as := lb.p.alloc.Lookup(serviceKey(svc))
	if len(as) == 0 {
		return nil, false, nil
	}
	return ingressStatus(as), true, nil
}

// GetLoadBalancerName is the Service's namespace/name joined so it is unique
// in the cluster.
func (lb *LoadBalancer) GetLoadBalancerName(ctx context.Context, clusterName string, svc *v1.Service) string {
	return svc.Namespace + "-" + svc.Name
}

// EnsureLoadBalancer allocates (or returns) the Service's addresses, has the
// API server record them, and schedules the Service's plan.
func (lb *LoadBalancer) EnsureLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	if err := lb.checkReady(); err != nil {
		return nil, err
	}
	p := lb.p
	logger := klog.FromContext(ctx).WithValues("service", klog.KObj(svc))
	key := serviceKey(svc)
	unlock := p.lockKey(key)
	defer unlock()

	var nsLabels map[string]string
	if ns, err := p.cluster.Namespace(ctx, svc.Namespace); err == nil {
		nsLabels = ns.Labels
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading namespace %s: %w", svc.Namespace, err)
	}
	req, err := buildRequest(svc, nsLabels)
	if err != nil {
		p.cluster.Event(svc, v1.EventTypeWarning, ReasonInvalid, err.Error())
		metricAllocations.WithLabelValues(ReasonInvalid).Inc()
		return nil, reportedError{err}
	}
	if err := lb.checkNamedPools(req); err != nil {
		return nil, lb.refuse(svc, err)
	}
	req = p.applyReservations(svc, req)

	if err := lb.followRecorded(ctx, svc, req); err != nil {
		return nil, err
	}
	before := p.confirmedAddrs(key)
	var as, binds []ipam.Assignment
	for attempt := 0; ; attempt++ {
		as, err = p.alloc.Allocate(req)
		if err != nil {
			return nil, lb.refuse(svc, err)
		}
		if as, err = p.settlePending(ctx, key, as); err != nil {
			return nil, err
		}
		// Addresses just handed out from a reservation already have their
		// claim; it is bound to the Service later (see afterStatus).
		var now []ipam.Assignment
		binds = binds[:0]
		for _, a := range as {
			switch {
			case !a.Reserved:
				now = append(now, a)
			case !slices.Contains(before, a.Addr):
				binds = append(binds, a)
			}
			// A kept address still Reserved has its bind pending already.
		}
		err = lb.claimAll(ctx, svc, now, req)
		if err == nil {
			break
		}
		var he *heldError
		isHeld := errors.As(err, &he)
		if isHeld || errors.Is(err, ipam.ErrPortClash) {
			// The API server knows a holder the in-memory state did not
			// (e.g. written by a replica that lost leadership mid-write):
			// drop the tentative addresses, record that holder, keep what
			// the Service already had, and try again.
			p.alloc.Release(key)
			if isHeld {
				logger.Info("Address is held elsewhere; recording the holder", "address", he.addr, "holder", ownersString(he.claim.Spec.Owners))
				lb.recordForeign(he.claim)
			}
			if len(before) > 0 {
				if _, aerr := p.alloc.Assign(key, before, req.Sharing, req.Ports); aerr != nil {
					logger.Error(aerr, "Restoring the Service's addresses failed")
				}
			}
		}
		if !isHeld || attempt >= claimAttempts || len(req.Addresses) > 0 {
			// Taken is final for an explicit address; anything else is
			// reported and retried by the controller.
			return nil, lb.refuse(svc, err)
		}
	}

	addrs := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		addrs = append(addrs, a.Addr)
	}
	// Addresses the Service no longer uses (e.g. it asked for another one)
	// are released at the API server too.
	for _, old := range before {
		if !slices.Contains(addrs, old) {
			if err := p.unclaim(ctx, svc, old); err != nil {
				logger.Error(err, "Releasing a replaced address failed", "address", old)
			}
		}
	}
	p.setConfirmed(key, addrs)
	event := ""
	if !slices.Equal(before, addrs) {
		// Reported with the deferred bookkeeping (see afterStatus), so the
		// event's write does not compete with the status write.
		event = describe(as)
		signal(p.statusDirty)
	}
	p.deferAfterStatus(key, svc, req, binds, event)
	// The plan is written when the Service's status update reaches the
	// provider's cache (the Service handler queues it): after the write the
	// user waits for, not competing with it. Pools and nodes requeue it too.
	return ingressStatus(as), nil
}

// retryFollow is how soon followRecorded is retried when it cannot follow yet.
const retryFollow = 200 * time.Millisecond

// followRecorded makes this replica agree with what the API server records
// for svc when another active replica got there first: an address in the
// Service's status that this replica did not pick, claimed at the API server
// by this very Service (same UID), is what clients already see. It replaces
// this replica's own pick of the same family, which is released. This only
// happens with two active replicas (leader election off, or a leader that
// lost its lease mid-write); with the conditional status write of the
// service controller it makes them converge on the first writer's address
// instead of overwriting each other. An address in the status whose claim
// is still an earlier leader's reservation is followed too, and the claim
// bound: that leader handed it to this Service and stopped before binding.
// Status addresses without such a claim (stale cache, or released
// meanwhile) are ignored: the replica's own record stands.
func (lb *LoadBalancer) followRecorded(ctx context.Context, svc *v1.Service, req ipam.Request) error {
	p := lb.p
	key := serviceKey(svc)
	mine := p.confirmedAddrs(key)
	var foreign []netip.Addr
	for _, a := range statusAddrs(svc) {
		if !slices.Contains(mine, a) {
			foreign = append(foreign, a)
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	recorded := map[netip.Addr]*v1alpha2.IPClaim{}
	for _, a := range foreign {
		c, err := p.cluster.LiveClaim(ctx, v1alpha2.ClaimName(a))
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the claim of %s: %w", a, err)
		}
		// An earlier leader's reservation that the status shows was handed
		// to this Service by that leader, which stopped before binding it.
		if !holds(c, string(svc.UID)) && (!isReservation(c) || p.isMyReservation(c)) {
			return nil
		}
		recorded[a] = c
	}
	follow := slices.Clone(foreign)
	var drop []netip.Addr
	for _, a := range mine {
		if slices.ContainsFunc(foreign, func(f netip.Addr) bool { return ipam.FamilyOf(f) == ipam.FamilyOf(a) }) {
			drop = append(drop, a)
		} else {
			follow = append(follow, a)
		}
	}
	// The claim is the truth: whoever else this replica's allocator has on
	// a recorded address is either a stale record or a pick of its own not
	// claimed yet (that claim is bound to fail at the API server, which
	// then teaches the allocator the real holder). Evict them.
	for a, c := range recorded {
		for _, o := range p.alloc.Owners(a) {
			if o != key && !slices.ContainsFunc(c.Spec.Owners, func(co v1alpha2.ClaimOwner) bool { return co.Namespace+"/"+co.Name == string(o) }) {
				p.alloc.ReleaseAddr(o, a)
			}
		}
	}
	p.alloc.Release(key)
	if _, err := p.alloc.Assign(key, follow, req.Sharing, req.Ports); err != nil {
		// Raced with another worker picking the address again: restore and
		// retry shortly rather than write this replica's pick over the
		// recorded one.
		if len(mine) > 0 {
			_, _ = p.alloc.Assign(key, mine, req.Sharing, req.Ports)
		}
		return api.NewRetryError(fmt.Sprintf("cannot follow the address recorded for %s yet: %v", key, err), retryFollow)
	}
	for a, c := range recorded {
		if isReservation(c) {
			if err := p.claim(ctx, svc, ipam.Assignment{Pool: c.Spec.Pool, Addr: a}, req, true); err != nil {
				return fmt.Errorf("binding the reserved claim of %s: %w", a, err)
			}
			p.forgetForeign(a)
		}
	}
	logger := klog.FromContext(ctx)
	logger.Info("Following the address another replica recorded", "service", klog.KObj(svc), "recorded", foreign, "dropped", drop)
	for _, a := range drop {
		if err := p.unclaim(ctx, svc, a); err != nil {
			logger.Error(err, "Releasing a superseded address failed", "service", klog.KObj(svc), "address", a)
		}
	}
	p.setConfirmed(key, follow)
	signal(p.statusDirty)
	return nil
}

func (lb *LoadBalancer) claimAll(ctx context.Context, svc *v1.Service, as []ipam.Assignment, req ipam.Request) error {
	for _, a := range as {
		if err := lb.p.claim(ctx, svc, a, req, false); err != nil {
			return err
		}
	}
	return nil
}

// recordForeign teaches the allocator about holders it did not know.
func (lb *LoadBalancer) recordForeign(c *v1alpha2.IPClaim) {
	addr, err := netip.ParseAddr(c.Spec.Address)
	if err != nil {
		return
	}
	if isReservation(c) {
		_, _ = lb.p.alloc.Assign(reservationOwner(c.Spec.ReservedBy), []netip.Addr{addr}, ipam.Sharing{}, nil)
		return
	}
	if rf := c.Spec.ReservedFor; rf != nil && len(c.Spec.Owners) == 0 {
		if r, err := reservationOf(c); err == nil {
			lb.p.holdFor(context.Background(), r)
		}
		return
	}
	for _, o := range c.Spec.Owners {
		_, _ = lb.p.alloc.Assign(ipam.ServiceKey(o.Namespace+"/"+o.Name), []netip.Addr{addr}, ipam.Sharing{Key: c.Spec.SharingKey}, ipamPorts(o.Ports))
	}
}

// checkNamedPools gives a precise reason for pools the allocator does not
// know because they are invalid or use an unsupported protocol.
func (lb *LoadBalancer) checkNamedPools(req ipam.Request) error {
	set := lb.p.pools.Load()
	for _, name := range req.Pools {
		if pl := set.get(name); pl != nil && pl.problem != "" {
			return fmt.Errorf("%w: Eip %q cannot serve allocations: %s", errPoolUnusable, name, pl.problem)
		}
	}
	return nil
}

var errPoolUnusable = errors.New("pool unusable")

// refuse reports why a Service got no address: an event with a precise
// reason, and an error for the controller to retry.
func (lb *LoadBalancer) refuse(svc *v1.Service, err error) error {
	reason := refusalReason(err)
	lb.p.cluster.Event(svc, v1.EventTypeWarning, reason, err.Error())
	metricAllocations.WithLabelValues(reason).Inc()
	switch reason {
	case ReasonNoPool, ReasonPoolNotFound, ReasonPoolDisabled, ReasonPoolExhausted, ReasonPoolUnsupported, ReasonIPTaken, ReasonIPNotInPool,
		ReasonSharedIPPortClash, ReasonFamilyMismatch, ReasonPoolNotBound, ReasonPoolNotSelected, ReasonSharedIPNamespace, ReasonSharedIPTrafficPolicy:
		// These resolve when pools or other Services change, which the
		// service controller does not watch: retry on a fixed period.
		return api.NewRetryError(err.Error(), lb.p.opts.RetryAfter)
	}
	return reportedError{err}
}

// reportedError marks an error the provider already reported with an event
// on the Service, so the controller does not report it twice.
type reportedError struct{ error }

func (e reportedError) Unwrap() error { return e.error }

// IsReported tells whether err was already reported on the Service.
func IsReported(err error) bool {
	var r reportedError
	return errors.As(err, &r)
}

func refusalReason(err error) string {
	switch {
	case errors.Is(err, errPoolUnusable):
		return ReasonPoolUnsupported
	case errors.Is(err, ipam.ErrPoolNotFound):
		return ReasonPoolNotFound
	case errors.Is(err, ipam.ErrPoolDisabled):
		return ReasonPoolDisabled
	case errors.Is(err, ipam.ErrPoolExhausted):
		return ReasonPoolExhausted
	case errors.Is(err, ipam.ErrNoPool):
		return ReasonNoPool
	case errors.Is(err, ipam.ErrPortClash):
		return ReasonSharedIPPortClash
	case errors.Is(err, ipam.ErrNotBound):
		return ReasonPoolNotBound
	case errors.Is(err, ipam.ErrNotSelected):
		return ReasonPoolNotSelected
	case errors.Is(err, ipam.ErrShareNamespace):
		return ReasonSharedIPNamespace
	case errors.Is(err, ipam.ErrShareTrafficPolicy):
		return ReasonSharedIPTrafficPolicy
	case errors.Is(err, ipam.ErrAddressTaken):
		return ReasonIPTaken
	case errors.Is(err, ipam.ErrNotInPool):
		return ReasonIPNotInPool
	case errors.Is(err, ipam.ErrFamilyMismatch):
		return ReasonFamilyMismatch
	case errors.Is(err, errInvalidService):
		return ReasonInvalid
	}
	return "AllocationFailed"
}

func describe(as []ipam.Assignment) string {
	parts := make([]string, 0, len(as))
	for _, a := range as {
		if a.Pool == "" {
			parts = append(parts, a.Addr.String())
			continue
		}
		parts = append(parts, fmt.Sprintf("%s from Eip %s", a.Addr, a.Pool))
	}
	return "allocated " + strings.Join(parts, ", ")
}

func ingressStatus(as []ipam.Assignment) *v1.LoadBalancerStatus {
	st := &v1.LoadBalancerStatus{}
	for _, a := range as {
		// ipMode VIP is what the API server defaults it to; saying so keeps
		// the status we return equal to the one stored, so an unchanged
		// Service costs no write.
		st.Ingress = append(st.Ingress, v1.LoadBalancerIngress{IP: a.Addr.String(), IPMode: ptr.To(v1.LoadBalancerIPModeVIP)})
	}
	return st
}

// UpdateLoadBalancer is called when the set of nodes changes; the plan is
// recomputed.
func (lb *LoadBalancer) UpdateLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service, nodes []*v1.Node) error {
	if err := lb.checkReady(); err != nil {
		return err
	}
	lb.p.planQueue.Add(string(serviceKey(svc)))
	return nil
}

// EnsureLoadBalancerDeleted releases the Service's addresses, at the API
// server first so the address is never free in memory while still claimed.
func (lb *LoadBalancer) EnsureLoadBalancerDeleted(ctx context.Context, clusterName string, svc *v1.Service) error {
	if err := lb.checkReady(); err != nil {
		return err
	}
	p := lb.p
	key := serviceKey(svc)
	unlock := p.lockKey(key)
	defer unlock()
	p.cancelAfterStatus(key)
	as := p.alloc.Lookup(key)
	for _, a := range as {
		// An address handed out from a reservation and not bound yet is
		// still this process's reservation: unclaim leaves its claim alone
		// and Release returns it to the reservations.
		if err := p.unclaim(ctx, svc, a.Addr); err != nil {
			return err
		}
	}
	p.alloc.Release(key)
	p.setConfirmed(key, nil)
	if len(as) > 0 {
		addrs := make([]string, 0, len(as))
		for _, a := range as {
			addrs = append(addrs, a.Addr.String())
		}
		p.cluster.Event(svc, v1.EventTypeNormal, ReasonReleased, "released "+strings.Join(addrs, ", "))
		metricAllocations.WithLabelValues(ReasonReleased).Inc()
		signal(p.statusDirty)
	}
	p.planQueue.Add(string(key))
	return nil
}
