package cloud

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// Reservations for future Services (IPClaim spec.reservedFor).
//
// An admin creates the IPClaim of an address, named after it as every
// claim is, with spec.reservedFor naming a Service that may not exist yet.
// Because the claim's name is the lock on the address, no CCM replica can
// claim the address for anybody else: the API server refuses the create,
// and claim() refuses to join a claim reserved for another Service. In
// memory the address is held under ipam.HeldFor(service), so automatic
// allocation never picks it and another Service asking for it is refused
// without a round trip.
//
// When the Service syncs, the reserved address is added to its request as
// if the Service had asked for it (so it must lie in an Eip the Service's
// namespace and labels may use: the reservation holds an address, it does
// not bypass tenancy), and the allocator hands it over in place. The claim
// is then bound (owners set, reservedFor kept). When the Service is
// deleted its owner entry goes and the claim stays, held again for the
// Service's next incarnation; only deleting the claim ends the
// reservation.
//
// Two cases keep the reservation without using it, each with an event on
// the Service: the Service asks for another address of that family
// explicitly, or it already holds one (an address never changes under a
// running Service; recreate it, or ask for the reserved address, to move).
//
// Cost: one cache read and a map update per claim event; a Service sync
// looks its reservations up in a map. Nothing scans the claims.

// reservation is one admin reservation known from the claim cache.
type reservation struct {
	addr netip.Addr
	svc  ipam.ServiceKey
}

// claimChanged follows an IPClaim event: it indexes reservations for
// Services and, once the provider has re-adopted what is held, holds their
// addresses for those Services.
func (p *Provider) claimChanged(ctx context.Context, name string) {
	c, err := p.cluster.Claim(ctx, name)
	if err != nil && !apierrors.IsNotFound(err) {
		klog.FromContext(ctx).Error(err, "Reading an IPClaim from the cache failed", "claim", name)
		return
	}
	var now *reservation
	if err == nil && c.Spec.ReservedFor != nil {
		r, rerr := reservationOf(c)
		if rerr != nil {
			p.cluster.Event(c, v1.EventTypeWarning, ReasonInvalidReservation, rerr.Error())
		} else {
			now = &r
		}
	}
	p.mu.Lock()
	old, had := p.resvByClaim[name]
	if had {
		p.resvBySvc[old.svc] = slices.DeleteFunc(p.resvBySvc[old.svc], func(x netip.Addr) bool { return x == old.addr })
		if len(p.resvBySvc[old.svc]) == 0 {
			delete(p.resvBySvc, old.svc)
		}
		delete(p.resvByClaim, name)
	}
	if now != nil {
		p.resvByClaim[name] = *now
		p.resvBySvc[now.svc] = append(p.resvBySvc[now.svc], now.addr)
	}
	p.mu.Unlock()

	if !p.ready.Load() {
		return // adopt holds what the cache shows once it runs
	}
	if had && (now == nil || *now != old) {
		p.alloc.ReleaseAddr(ipam.HeldFor(old.svc), old.addr)
	}
	if now != nil && len(c.Spec.Owners) == 0 {
		p.holdFor(ctx, *now)
	}
}

// reservationOf validates an admin's reservation claim.
func reservationOf(c *v1alpha2.IPClaim) (reservation, error) {
	addr, err := netip.ParseAddr(c.Spec.Address)
	if err != nil {
		return reservation{}, fmt.Errorf("IPClaim %s: spec.address %q is not an IP address; the reservation is ignored", c.Name, c.Spec.Address)
	}
	if want := v1alpha2.ClaimName(addr); c.Name != want {
		return reservation{}, fmt.Errorf("IPClaim %s reserves %s but the claim of that address is named %s; the reservation is ignored (recreate it under that name)", c.Name, addr, want)
	}
	if err := ipam.CheckUsable(addr); err != nil {
		return reservation{}, fmt.Errorf("IPClaim %s: %v; the reservation is ignored", c.Name, err)
	}
	rf := c.Spec.ReservedFor
	return reservation{addr: addr.Unmap(), svc: ipam.ServiceKey(rf.Namespace + "/" + rf.Name)}, nil
}

// holdFor holds r's address for its Service unless somebody holds it. An
// address a Service of another name holds (it had it before the claim
// was written, which the API server's claim lock prevents unless the admin
// edited a bound claim) stays with it; the reservation applies once it is
// released.
func (p *Provider) holdFor(ctx context.Context, r reservation) {
	if owners := p.alloc.Owners(r.addr); len(owners) > 0 {
		return
	}
	if _, err := p.alloc.Assign(ipam.HeldFor(r.svc), []netip.Addr{r.addr}, ipam.Sharing{}, nil); err != nil {
		klog.FromContext(ctx).Error(err, "Cannot hold a reserved address", "address", r.addr, "for", r.svc)
	}
}

// reservedFor lists the addresses reserved for svc.
func (p *Provider) reservedFor(svc ipam.ServiceKey) []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.resvBySvc[svc])
}

// applyReservations adds the addresses reserved for svc to its request,
// one per requested family, unless the Service asks for another address of
// that family or already holds one (each said by an event).
func (p *Provider) applyReservations(svc *v1.Service, req ipam.Request) ipam.Request {
	resv := p.reservedFor(req.Service)
	if len(resv) == 0 {
		return req
	}
	held := p.alloc.Lookup(req.Service)
	for _, x := range resv {
		fam := ipam.FamilyOf(x)
		if !slices.Contains(req.Families, fam) {
			p.cluster.Event(svc, v1.EventTypeNormal, ReasonReservationUnused,
				fmt.Sprintf("address %s is reserved for this Service (IPClaim %s) but it asks for no %s address; it stays reserved", x, v1alpha2.ClaimName(x), fam))
			continue
		}
		if i := slices.IndexFunc(req.Addresses, func(y netip.Addr) bool { return ipam.FamilyOf(y.Unmap()) == fam }); i >= 0 {
			if req.Addresses[i].Unmap() != x {
				p.cluster.Event(svc, v1.EventTypeWarning, ReasonReservationUnused,
					fmt.Sprintf("the Service asks for %s; address %s reserved for it (IPClaim %s) stays reserved", req.Addresses[i], x, v1alpha2.ClaimName(x)))
			}
			continue
		}
		if i := slices.IndexFunc(held, func(a ipam.Assignment) bool { return ipam.FamilyOf(a.Addr) == fam }); i >= 0 {
			if held[i].Addr != x {
				p.cluster.Event(svc, v1.EventTypeNormal, ReasonReservationUnused,
					fmt.Sprintf("the Service keeps %s (an address never changes under a Service); address %s reserved for it (IPClaim %s) stays reserved until it is recreated", held[i].Addr, x, v1alpha2.ClaimName(x)))
			}
			continue
		}
		req.Addresses = append(req.Addresses, x)
	}
	return req
}
