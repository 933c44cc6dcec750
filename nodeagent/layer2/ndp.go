package layer2

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
)

// ndpConn carries NDP messages on one interface. It is the seam between the
// protocol logic and the ICMPv6 socket.
type ndpConn interface {
	// ReadFrom blocks for the next NDP message received on the interface
	// with hop limit 255; src is its IPv6 source, unspecified for duplicate
	// address detection.
	ReadFrom() (m ndp.Message, src netip.Addr, err error)
	// WriteTo sends m from src (which need not be assigned to the node) to
	// dst on the interface, with hop limit 255.
	WriteTo(m ndp.Message, src, dst netip.Addr) error
	// JoinGroup and LeaveGroup manage multicast membership on the
	// interface: solicitations for an address go to its solicited-node
	// group, which the NIC drops unless someone joined it.
	JoinGroup(group netip.Addr) error
	LeaveGroup(group netip.Addr) error
	SetReadDeadline(t time.Time) error
	Close() error
}

var allNodes = netip.MustParseAddr("ff02::1")

// handleNS answers a neighbor solicitation for an answered IP with a
// Neighbor Advertisement carrying its MAC (RFC 4861 7.2.4): Solicited and
// Override set, sent from the target address (some clients ignore any other
// source) to the solicitor, or to all nodes when the solicitor is doing
// duplicate address detection and has no address yet.
func (r *Responder) handleNS(m ndp.Message, src netip.Addr) {
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || r.fromSelf(ns) {
		return
	}
	target := normalize(ns.TargetAddress)

	r.mu.RLock()
	defer r.mu.RUnlock()
	mac, ok := r.lookup(target)
	if !ok {
		return
	}
	na := &ndp.NeighborAdvertisement{
		Solicited:     true,
		Override:      true,
		TargetAddress: target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	dst := src
	if !src.IsValid() || src.IsUnspecified() {
		na.Solicited = false
		dst = allNodes
	}
	err := r.ndp.WriteTo(na, target, dst)
	r.countSend(err, &r.stats.nsAnswered, "neighbor advertisement", target)
	if err == nil {
		r.log.V(4).Info("answered neighbor solicitation", "ip", target, "mac", mac, "from", src)
	}
}

// fromSelf reports a solicitation carrying this interface's MAC as source
// link-layer address: the node's own, looped back through a multicast group
// it shares with us.
func (r *Responder) fromSelf(ns *ndp.NeighborSolicitation) bool {
	for _, o := range ns.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
			return bytes.Equal(lla.Addr, r.ifi.HardwareAddr)
		}
	}
	return false
}

// sendUnsolicitedNA tells all nodes that ip is at mac; Override makes them
// replace a cached MAC. The caller holds r.mu for reading.
func (r *Responder) sendUnsolicitedNA(ip netip.Addr, mac net.HardwareAddr) error {
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	err := r.ndp.WriteTo(na, ip, allNodes)
	r.countSend(err, &r.stats.unaSent, "unsolicited neighbor advertisement", ip)
	return err
}

// syncGroups joins the solicited-node groups of the IPv6 addresses in
// answers and leaves those no longer needed. An address whose group cannot
// be joined is removed from answers and reported: it would never hear a
// multicast solicitation. The caller holds r.mu for writing.
func (r *Responder) syncGroups(answers map[netip.Addr]net.HardwareAddr) []*AddrError {
	if r.ndp == nil {
		return nil
	}
	var errs []*AddrError
	want := map[netip.Addr]bool{}
	for ip := range answers {
		if !ip.Is6() {
			continue
		}
		group, err := ndp.SolicitedNodeMulticast(ip)
		if err == nil && !r.groups[group] && !want[group] {
			err = r.ndp.JoinGroup(group)
		}
		if err != nil {
			delete(answers, ip)
			errs = append(errs, &AddrError{Interface: r.ifi.Name, Addr: ip, Err: fmt.Errorf("joining solicited-node group %s: %w", group, err)})
			continue
		}
		want[group] = true
	}
	for group := range r.groups {
		if want[group] {
			continue
		}
		if err := r.ndp.LeaveGroup(group); err != nil {
			r.log.Error(err, "leaving solicited-node group", "group", group)
		}
	}
	r.groups = want
	return errs
}
