package layer2

import (
	"bytes"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
)

// arpConn carries ARP packets on one interface. It is the seam between the
// protocol logic and the AF_PACKET socket.
type arpConn interface {
	// ReadFrom blocks for the next IPv4-over-Ethernet ARP packet received.
	ReadFrom() (*arp.Packet, error)
	// WriteTo sends p in an Ethernet frame to dst; the frame's source is
	// the interface's own MAC whatever p.SenderHardwareAddr says.
	WriteTo(p *arp.Packet, dst net.HardwareAddr) error
	SetReadDeadline(t time.Time) error
	Close() error
}

var (
	ethernetBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ethernetZero      = net.HardwareAddr{0, 0, 0, 0, 0, 0}
)

// handleARP replies to a request for an answered IP with its MAC.
//
// Only requests are answered: replies and announcements (sender IP equal to
// target IP, i.e. gratuitous ARP) tell rather than ask. Packets sent from
// this interface's own MAC are the node's own (or looped back) and ignored.
// Probes (sender IP 0.0.0.0, RFC 5227) are answered, which is how a host
// about to take the address learns it is in use.
func (r *Responder) handleARP(req *arp.Packet) {
	if bytes.Equal(req.SenderHardwareAddr, r.ifi.HardwareAddr) {
		return
	}
	r.noticeConflict(req)
	if req.Operation != arp.OperationRequest || req.SenderIP == req.TargetIP {
		return
	}

	r.mu.RLock()
	defer r.mu.RUnlock()
	mac, ok := r.lookup(req.TargetIP)
	if !ok {
		return
	}
	reply := &arp.Packet{
		HardwareType:       1,
		ProtocolType:       0x0800,
		HardwareAddrLength: 6,
		IPLength:           4,
		Operation:          arp.OperationReply,
		SenderHardwareAddr: mac,
		SenderIP:           req.TargetIP,
		TargetHardwareAddr: req.SenderHardwareAddr,
		TargetIP:           req.SenderIP,
	}
	err := r.arp.WriteTo(reply, req.SenderHardwareAddr)
	r.countSend(err, &r.stats.arpAnswered, "ARP reply", req.TargetIP)
	if err == nil {
		r.log.V(4).Info("answered ARP request", "ip", req.TargetIP, "mac", mac, "from", req.SenderHardwareAddr)
	}
}

// noticeConflict counts another host claiming an answered IP (in a reply,
// an announcement or its own request) and logs it: two hosts answering for
// one address split its traffic, which the operator must know about. The
// log is at most one line per address per conflictLogEvery, since the
// other host may send such packets many times a second.
func (r *Responder) noticeConflict(p *arp.Packet) {
	r.mu.RLock()
	mac, ok := r.lookup(p.SenderIP)
	r.mu.RUnlock()
	if !ok || bytes.Equal(mac, p.SenderHardwareAddr) {
		return
	}
	total := r.stats.arpConflicts.Add(1)
	if r.shouldLogConflict(p.SenderIP, time.Now()) {
		r.log.Info("another host claims an answered IP", "ip", p.SenderIP, "theirMAC", p.SenderHardwareAddr, "ourMAC", mac,
			"conflictsOnInterface", total)
	}
}

// shouldLogConflict tells whether a conflict about ip may be logged now.
// The map holds at most the answered addresses that saw conflicts within
// conflictLogEvery; older entries are dropped when it grows.
func (r *Responder) shouldLogConflict(ip netip.Addr, now time.Time) bool {
	r.conflictMu.Lock()
	defer r.conflictMu.Unlock()
	if last, ok := r.conflictLogged[ip]; ok && now.Sub(last) < conflictLogEvery {
		return false
	}
	if len(r.conflictLogged) >= 1024 {
		for a, t := range r.conflictLogged {
			if now.Sub(t) >= conflictLogEvery {
				delete(r.conflictLogged, a)
			}
		}
	}
	r.conflictLogged[ip] = now
	return true
}

// sendGratuitousARP broadcasts an ARP announcement (RFC 5227: a request with
// sender and target IP both ip), which updates every neighbour entry for ip
// on the segment. The caller holds r.mu for reading.
func (r *Responder) sendGratuitousARP(ip netip.Addr, mac net.HardwareAddr) error {
	p := &arp.Packet{
		HardwareType:       1,
		ProtocolType:       0x0800,
		HardwareAddrLength: 6,
		IPLength:           4,
		Operation:          arp.OperationRequest,
		SenderHardwareAddr: mac,
		SenderIP:           ip,
		TargetHardwareAddr: ethernetZero,
		TargetIP:           ip,
	}
	err := r.arp.WriteTo(p, ethernetBroadcast)
	r.countSend(err, &r.stats.garpSent, "gratuitous ARP", ip)
	return err
}
