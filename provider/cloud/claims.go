package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// claimAttempts bounds the optimistic-concurrency loop on one claim.
const claimAttempts = 5

// heldError says the API server records another holder for an address;
// cause, when set, is why this Service may not join that holder (a sharing
// rule of ipam.CheckSharing).
type heldError struct {
	addr  netip.Addr
	claim *v1alpha2.IPClaim
	cause error
}

func (e *heldError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("address %s (IPClaim %s): %v", e.addr, e.claim.Name, e.cause)
	}
	if isReservation(e.claim) {
		return fmt.Sprintf("address %s is reserved by CCM process %s (IPClaim %s)", e.addr, e.claim.Spec.ReservedBy, e.claim.Name)
	}
	if rf := e.claim.Spec.ReservedFor; rf != nil {
		return fmt.Sprintf("address %s is reserved for Service %s/%s (IPClaim %s)", e.addr, rf.Namespace, rf.Name, e.claim.Name)
	}
	return fmt.Sprintf("address %s is held by %s (IPClaim %s)", e.addr, ownersString(e.claim.Spec.Owners), e.claim.Name)
}

func (e *heldError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.cause, ipam.ErrAddressTaken}
	}
	return []error{ipam.ErrAddressTaken}
}

func ownersString(owners []v1alpha2.ClaimOwner) string {
	s := ""
	for i, o := range owners {
		if i > 0 {
			s += ","
		}
		s += o.Namespace + "/" + o.Name
	}
	return s
}

func claimPorts(ports []ipam.Port) []v1alpha2.ClaimPort {
	out := make([]v1alpha2.ClaimPort, 0, len(ports))
	for _, p := range ports {
		out = append(out, v1alpha2.ClaimPort{Protocol: p.Protocol, Port: p.Port})
	}
	return out
}

func ipamPorts(ports []v1alpha2.ClaimPort) []ipam.Port {
	out := make([]ipam.Port, 0, len(ports))
	for _, p := range ports {
		out = append(out, ipam.Port{Protocol: p.Protocol, Port: p.Port})
	}
	return out
}

func holds(c *v1alpha2.IPClaim, uid string) bool {
	return slices.ContainsFunc(c.Spec.Owners, func(o v1alpha2.ClaimOwner) bool { return string(o.UID) == uid })
}

// holdsWithPorts tells whether the claim records me with its current ports.
func holdsWithPorts(c *v1alpha2.IPClaim, me v1alpha2.ClaimOwner) bool {
	i := slices.IndexFunc(c.Spec.Owners, func(o v1alpha2.ClaimOwner) bool { return o.UID == me.UID })
	return i >= 0 && slices.Equal(c.Spec.Owners[i].Ports, me.Ports)
}

func portsClash(a []v1alpha2.ClaimPort, b []ipam.Port) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Protocol == y.Protocol && x.Port == y.Port {
				return true
			}
		}
	}
	return false
}

// claim makes the API server record svc as a holder of a.Addr. Creating the
// IPClaim named after the address is atomic, so of two replicas racing for
// one address exactly one wins; joining a shared address is an update with
// the claim's resourceVersion, so concurrent joins are serialised too.
//
// A reserved claim (see reserve.go) is bound to svc by an update conditional
// on its resourceVersion when this process made it, or, with adopt, when
// svc's status already shows the address (a leader that crashed between the
// status write and the bind). Anybody else's reservation is held.
func (p *Provider) claim(ctx context.Context, svc *v1.Service, a ipam.Assignment, req ipam.Request, adopt bool) error {
	name := v1alpha2.ClaimName(a.Addr)
	me := v1alpha2.ClaimOwner{Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID, Ports: claimPorts(req.Ports)}
	c, err := p.cluster.Claim(ctx, name)
	if err == nil && holdsWithPorts(c, me) {
		p.alloc.Bound(a.Addr)
		return nil
	}
	// The cache decides the first attempt: absent there, the claim is most
	// likely free, so create it straight away (one round trip on the
	// allocation path), and this process's own reservation is bound
	// straight away (the update is conditional anyway); everything else,
	// and every retry, reads the live claim.
	cacheFirst := apierrors.IsNotFound(err) || (err == nil && a.Reserved && p.isMyReservation(c))
	for attempt := 0; attempt < claimAttempts; attempt++ {
		if attempt > 0 || !cacheFirst {
			c, err = p.cluster.LiveClaim(ctx, name)
		}
		if apierrors.IsNotFound(err) {
			err = p.cluster.CreateClaim(ctx, &v1alpha2.IPClaim{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: v1alpha2.IPClaimSpec{
					Address:    a.Addr.String(),
					Pool:       a.Pool,
					SharingKey: req.Sharing.Key,
					Owners:     []v1alpha2.ClaimOwner{me},
				},
			})
			if err == nil {
				return nil
			}
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return fmt.Errorf("creating IPClaim %s: %w", name, err)
		}
		if err != nil {
			return fmt.Errorf("reading IPClaim %s: %w", name, err)
		}
		if holdsWithPorts(c, me) {
			p.alloc.Bound(a.Addr)
			return nil
		}
		if holds(c, string(svc.UID)) {
			// The Service's ports changed: the claim is what other
			// replicas check port clashes against, so it follows.
			upd := c.DeepCopy()
			for i, o := range upd.Spec.Owners {
				if o.UID == me.UID {
					upd.Spec.Owners[i].Ports = me.Ports
				}
			}
			if retry, err := p.writeClaim(ctx, upd, "updating the ports of"); retry {
				continue
			} else if err != nil {
				return err
			}
			p.alloc.Bound(a.Addr)
			return nil
		}
		if rf := c.Spec.ReservedFor; rf != nil && (rf.Namespace != svc.Namespace || rf.Name != svc.Name) {
			// An admin's reservation for another Service.
			return &heldError{addr: a.Addr, claim: c}
		}
		if isReservation(c) {
			if !p.isMyReservation(c) && !adopt {
				return &heldError{addr: a.Addr, claim: c}
			}
			upd := c.DeepCopy()
			upd.Spec.ReservedBy = ""
			upd.Spec.Owners = []v1alpha2.ClaimOwner{me}
			upd.Spec.SharingKey = req.Sharing.Key
			upd.Spec.Pool = a.Pool
			if retry, err := p.writeClaim(ctx, upd, "binding reserved"); retry {
				continue
			} else if err != nil {
				return err
			}
			p.alloc.Bound(a.Addr)
			return nil
		}
		// A holder recorded for a previous incarnation of this Service (same
		// name, other UID) is stale: this Service replaces it.
		owners := slices.DeleteFunc(slices.Clone(c.Spec.Owners), func(o v1alpha2.ClaimOwner) bool {
			return o.Namespace == svc.Namespace && o.Name == svc.Name
		})
		if len(owners) > 0 {
			if req.Sharing.Key == "" || c.Spec.SharingKey != req.Sharing.Key {
				return &heldError{addr: a.Addr, claim: c}
			}
			for _, o := range owners {
				if err := p.checkSharingWith(ctx, svc, req.Sharing, o, c.Spec.SharingKey); err != nil {
					return &heldError{addr: a.Addr, claim: c, cause: err}
				}
				if portsClash(o.Ports, req.Ports) {
					return fmt.Errorf("%w: %s and %s/%s both use a port on shared address %s",
						ipam.ErrPortClash, svc.Namespace+"/"+svc.Name, o.Namespace, o.Name, a.Addr)
				}
			}
		}
		upd := c.DeepCopy()
		upd.Spec.Owners = append(owners, me)
		if len(owners) == 0 {
			upd.Spec.SharingKey = req.Sharing.Key
			upd.Spec.Pool = a.Pool
		}
		if retry, err := p.writeClaim(ctx, upd, "updating"); !retry {
			return err
		}
	}
	return fmt.Errorf("IPClaim %s kept changing under %d attempts", name, claimAttempts)
}

// writeClaim updates a claim; retry says it changed or went away since it
// was read, so the caller reads it again.
func (p *Provider) writeClaim(ctx context.Context, upd *v1alpha2.IPClaim, what string) (retry bool, err error) {
	err = p.cluster.UpdateClaim(ctx, upd)
	switch {
	case err == nil:
		return false, nil
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		return true, nil
	}
	return false, fmt.Errorf("%s IPClaim %s: %w", what, upd.Name, err)
}

// checkSharingWith applies the namespace and traffic-policy sharing rules
// (ipam.CheckSharing) to a holder the API server records, which another
// replica may have written without this one's allocator knowing it. A
// holder whose Service is not in the cache is judged by its claim alone
// (its key, no opt-ins, Cluster policy): refused across namespaces.
func (p *Provider) checkSharingWith(ctx context.Context, svc *v1.Service, mine ipam.Sharing, o v1alpha2.ClaimOwner, key string) error {
	other := ipam.Sharing{Key: key}
	if s, err := p.cluster.Service(ctx, o.Namespace, o.Name); err == nil && s.UID == o.UID {
		other, _ = sharingOf(s)
	}
	return ipam.CheckSharing(serviceKey(svc), mine, ipam.ServiceKey(o.Namespace+"/"+o.Name), other)
}

// unclaim removes svc from the claim on addr, deleting the claim when it
// was the last holder.
func (p *Provider) unclaim(ctx context.Context, svc *v1.Service, addr netip.Addr) error {
	name := v1alpha2.ClaimName(addr)
	for attempt := 0; attempt < claimAttempts; attempt++ {
		c, err := p.cluster.LiveClaim(ctx, name)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading IPClaim %s: %w", name, err)
		}
		owners := slices.DeleteFunc(slices.Clone(c.Spec.Owners), func(o v1alpha2.ClaimOwner) bool {
			return o.UID == svc.UID || (o.Namespace == svc.Namespace && o.Name == svc.Name)
		})
		if len(owners) == len(c.Spec.Owners) {
			return nil
		}
		err = p.setOwners(ctx, c, owners)
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if apierrors.IsConflict(err) {
			continue
		}
		return fmt.Errorf("releasing IPClaim %s: %w", name, err)
	}
	return fmt.Errorf("IPClaim %s kept changing under %d attempts", name, claimAttempts)
}

// adopt rebuilds the allocator from what the API server records, before
// anything new is allocated: every IPClaim holder whose Service still exists
// with the same UID, then every address in a Service's status that has no
// claim yet (Services from before this provider, or a crash between claim
// and status), which gets its claim now.
func (p *Provider) adopt(ctx context.Context) error {
	claims, err := p.cluster.Claims(ctx)
	if err != nil {
		return err
	}
	svcs, err := p.cluster.Services(ctx)
	if err != nil {
		return err
	}
	byKey := make(map[string]*v1.Service, len(svcs))
	for _, s := range svcs {
		byKey[s.Namespace+"/"+s.Name] = s
	}
	logger := klog.FromContext(ctx)
	held := map[ipam.ServiceKey][]netip.Addr{}
	var errs []error
	var reservations []*v1alpha2.IPClaim
	for _, c := range claims {
		addr, err := netip.ParseAddr(c.Spec.Address)
		if err != nil {
			logger.Error(err, "IPClaim has an invalid address; ignored", "claim", c.Name, "address", c.Spec.Address)
			continue
		}
		if isReservation(c) {
			// Left by an earlier leader: bound below to the Service whose
			// status shows it, else deleted after a grace period.
			reservations = append(reservations, c)
			continue
		}
		var live []v1alpha2.ClaimOwner
		for _, o := range c.Spec.Owners {
			s := byKey[o.Namespace+"/"+o.Name]
			if s == nil || s.UID != o.UID {
				continue
			}
			live = append(live, o)
			key := ipam.ServiceKey(o.Namespace + "/" + o.Name)
			sh, _ := sharingOf(s)
			sh.Key = c.Spec.SharingKey
			if _, err := p.alloc.Assign(key, []netip.Addr{addr}, sh, ipamPorts(o.Ports)); err != nil {
				// Two claims cannot name one address, so this only happens
				// when a Service holds more than one address per family;
				// the first one adopted wins and the conflict is reported.
				logger.Error(err, "Cannot re-adopt a claimed address", "address", addr, "service", key)
				continue
			}
			held[key] = append(held[key], addr)
		}
		if len(live) != len(c.Spec.Owners) {
			// Holders whose Service is gone: the claim is pruned so the
			// address returns to its pool (or to its reservation).
			if err := p.pruneClaim(ctx, c, live); err != nil {
				errs = append(errs, err)
			}
		}
		if c.Spec.ReservedFor != nil && len(live) == 0 {
			if r, err := reservationOf(c); err == nil {
				p.holdFor(ctx, r)
			}
		}
	}
	for _, s := range svcs {
		key := serviceKey(s)
		for _, addr := range statusAddrs(s) {
			if slices.Contains(held[key], addr) {
				continue
			}
			sh, _ := sharingOf(s)
			req := ipam.Request{Service: key, Sharing: sh}
			for _, sp := range s.Spec.Ports {
				req.Ports = append(req.Ports, ipam.Port{Protocol: string(sp.Protocol), Port: sp.Port})
			}
			as, err := p.alloc.Assign(key, []netip.Addr{addr}, req.Sharing, req.Ports)
			if err != nil {
				p.cluster.Event(s, v1.EventTypeWarning, "IPConflict",
					fmt.Sprintf("status address %s cannot be re-adopted: %v", addr, err))
				continue
			}
			if err := p.claim(ctx, s, as[len(as)-1], req, true); err != nil {
				var he *heldError
				if errors.As(err, &he) {
					p.alloc.Release(key)
					p.cluster.Event(s, v1.EventTypeWarning, "IPConflict", err.Error())
					continue
				}
				return err
			}
			held[key] = append(held[key], addr)
		}
	}
	for _, c := range reservations {
		addr, _ := netip.ParseAddr(c.Spec.Address)
		if len(p.alloc.Owners(addr)) > 0 {
			continue // bound to the Service showing it
		}
		// Not shown by any status yet; but a status write of the earlier
		// leader may still be in flight, so the address stays held for a
		// grace period before the reservation is deleted (sweepForeign).
		if _, err := p.alloc.Assign(reservationOwner(c.Spec.ReservedBy), []netip.Addr{addr}, ipam.Sharing{}, nil); err != nil {
			logger.Error(err, "Cannot hold an earlier leader's reservation", "claim", c.Name)
			continue
		}
		p.holdForeign(addr, c.Spec.ReservedBy)
	}
	p.mu.Lock()
	for k, v := range held {
		p.confirmed[k] = v
	}
	p.mu.Unlock()
	return errors.Join(errs...)
}

// setOwners writes a claim's new holders, deleting it when none is left
// unless an admin reserved it for a Service (it stays, held for the
// Service's next incarnation); both are conditional on the version read, so a concurrent change wins.
func (p *Provider) setOwners(ctx context.Context, c *v1alpha2.IPClaim, owners []v1alpha2.ClaimOwner) error {
	if len(owners) == 0 && c.Spec.ReservedFor == nil {
		return p.cluster.DeleteClaim(ctx, c)
	}
	upd := c.DeepCopy()
	upd.Spec.Owners = owners
	return p.cluster.UpdateClaim(ctx, upd)
}

func (p *Provider) pruneClaim(ctx context.Context, c *v1alpha2.IPClaim, live []v1alpha2.ClaimOwner) error {
	err := p.setOwners(ctx, c, live)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("pruning IPClaim %s: %w", c.Name, err)
	}
	return nil
}
