package layer2

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// fuzzLink is one interface of the fuzzed node, with its responder, fake
// sockets and what it answers.
type fuzzLink struct {
	r       *Responder
	arp     fakeARP
	ndp     *fakeNDP
	answers map[netip.Addr]net.HardwareAddr
}

// fuzzLinks builds two interfaces on two segments, each answering for its
// own addresses (one with its own MAC, one with another node's, as for
// externalTrafficPolicy Local), so a frame received on one must never make
// the other reply.
func fuzzLinks(t *testing.T) [2]*fuzzLink {
	t.Helper()
	specs := [2]struct {
		index    int
		name     string
		mac      string
		prefixes []string
		answers  map[string]string
	}{
		{7, "eth7", "02:00:00:00:00:01", []string{"192.0.2.1/24", "2001:db8:1::1/64", "fe80::1/64"},
			map[string]string{"192.0.2.10": "02:00:00:00:00:01", "192.0.2.11": "02:00:00:00:00:02",
				"2001:db8:1::10": "02:00:00:00:00:01", "2001:db8:1::11": "02:00:00:00:00:02"}},
		{8, "eth8", "02:00:00:00:01:01", []string{"198.51.100.1/24", "2001:db8:2::1/64", "fe80::2/64"},
			map[string]string{"198.51.100.10": "02:00:00:00:01:01", "2001:db8:2::10": "02:00:00:00:01:02"}},
	}
	var links [2]*fuzzLink
	for i, s := range specs {
		var prefixes []netip.Prefix
		for _, p := range s.prefixes {
			prefixes = append(prefixes, netip.MustParsePrefix(p))
		}
		l := &fuzzLink{arp: newFakeARP(), ndp: newFakeNDP(), answers: map[netip.Addr]net.HardwareAddr{}}
		for ip, mac := range s.answers {
			l.answers[netip.MustParseAddr(ip)] = mustMAC(mac)
		}
		ifi := &net.Interface{Index: s.index, Name: s.name, MTU: 1500, HardwareAddr: mustMAC(s.mac), Flags: net.FlagUp}
		l.r = newResponder(ifi, Options{}, l.arp, l.ndp, func() ([]netip.Prefix, error) { return prefixes, nil })
		if err := l.r.SetAnswers(l.answers); err != nil {
			t.Fatalf("SetAnswers on %s: %v", s.name, err)
		}
		t.Cleanup(func() { _ = l.r.Close() })
		links[i] = l
	}
	return links
}

// sent counts every message a link's sockets sent.
func (l *fuzzLink) sent() int { return len(l.arp.sentSoFar()) + len(l.ndp.sentSoFar()) }

// FuzzPackets hands arbitrary ARP payloads and ICMPv6 messages, parsed the
// way the real sockets parse them, to one of two responders. Whatever
// arrives: no panic; a reply only on the interface the frame came in on;
// a reply only to an ARP request or neighbor solicitation for an address
// that interface answers, carrying the MAC it is answered with, addressed
// to the requester, and marshalable; and every such request answered.
func FuzzPackets(f *testing.F) {
	client := mustMAC("02:00:00:00:00:99")
	arpSeed := func(op arp.Operation, sha net.HardwareAddr, spa, tpa string) []byte {
		p, err := arp.NewPacket(op, sha, netip.MustParseAddr(spa), ethernetZero, netip.MustParseAddr(tpa))
		if err != nil {
			panic(err)
		}
		b, err := p.MarshalBinary()
		if err != nil {
			panic(err)
		}
		return b
	}
	nsSeed := func(target string, lla net.HardwareAddr) []byte {
		b, err := ndp.MarshalMessage(neighborSolicitation(netip.MustParseAddr(target), lla))
		if err != nil {
			panic(err)
		}
		return b
	}
	clientIP6 := netip.MustParseAddr("2001:db8:1::99").AsSlice()
	none := []byte(nil)
	for _, second := range []bool{false, true} {
		f.Add(second, false, arpSeed(arp.OperationRequest, client, "192.0.2.99", "192.0.2.10"), none)
		f.Add(second, false, arpSeed(arp.OperationRequest, client, "192.0.2.99", "192.0.2.11"), none)
		f.Add(second, false, arpSeed(arp.OperationRequest, client, "0.0.0.0", "198.51.100.10"), none)
		f.Add(second, false, arpSeed(arp.OperationRequest, client, "192.0.2.99", "192.0.2.12"), none)
		f.Add(second, false, arpSeed(arp.OperationRequest, client, "192.0.2.10", "192.0.2.10"), none)
		f.Add(second, false, arpSeed(arp.OperationReply, client, "192.0.2.10", "192.0.2.99"), none)
		f.Add(second, false, arpSeed(arp.OperationReply, client, "192.0.2.99", "192.0.2.10"), none)
		f.Add(second, false, arpSeed(arp.OperationRequest, mustMAC("02:00:00:00:00:01"), "192.0.2.1", "192.0.2.10"), none)
		f.Add(second, false, []byte{0, 1, 8, 0, 6, 16, 0, 1}, none)
		f.Add(second, true, nsSeed("2001:db8:1::10", client), clientIP6)
		f.Add(second, true, nsSeed("2001:db8:1::11", nil), none)
		f.Add(second, true, nsSeed("2001:db8:2::10", client), clientIP6)
		f.Add(second, true, nsSeed("2001:db8:1::12", client), clientIP6)
		f.Add(second, true, nsSeed("2001:db8:1::10", mustMAC("02:00:00:00:00:01")), clientIP6)
		f.Add(second, true, nsSeed("fe80::10", client), netip.MustParseAddr("fe80::99").AsSlice())
	}
	f.Fuzz(func(t *testing.T, second, icmp bool, payload, src []byte) {
		links := fuzzLinks(t)
		in, other := links[0], links[1]
		if second {
			in, other = other, in
		}
		if icmp {
			fuzzNDP(t, in, payload, src)
		} else {
			fuzzARP(t, in, payload)
		}
		if n := other.sent(); n != 0 {
			t.Fatalf("a frame received on %s made %s send %d messages", in.r.ifi.Name, other.r.ifi.Name, n)
		}
	})
}

// fuzzARP delivers payload to l as its ARP socket would: arpConn.ReadFrom
// returns only IPv4-over-Ethernet packets.
func fuzzARP(t *testing.T, l *fuzzLink, payload []byte) {
	req := new(arp.Packet)
	if err := req.UnmarshalBinary(payload); err != nil || req.HardwareAddrLength != 6 || req.IPLength != 4 {
		return
	}
	l.r.handleARP(req)

	if n := len(l.ndp.sentSoFar()); n != 0 {
		t.Fatalf("an ARP packet made %s send %d NDP messages", l.r.ifi.Name, n)
	}
	sent := l.arp.sentSoFar()
	mac, answered := l.answers[req.TargetIP]
	want := req.Operation == arp.OperationRequest && req.SenderIP != req.TargetIP &&
		!bytes.Equal(req.SenderHardwareAddr, l.r.ifi.HardwareAddr) && answered
	switch {
	case !want && len(sent) != 0:
		t.Fatalf("%s answered %+v (target answered: %v) with %+v", l.r.ifi.Name, req, answered, sent[0].p)
	case want && len(sent) != 1:
		t.Fatalf("%s sent %d replies to a request for its address %s, want 1", l.r.ifi.Name, len(sent), req.TargetIP)
	case !want:
		return
	}
	got := sent[0]
	p := got.p
	if p.Operation != arp.OperationReply || p.SenderIP != req.TargetIP || !bytes.Equal(p.SenderHardwareAddr, mac) ||
		p.TargetIP != req.SenderIP || !bytes.Equal(p.TargetHardwareAddr, req.SenderHardwareAddr) ||
		!bytes.Equal(got.dst, req.SenderHardwareAddr) {
		t.Fatalf("%s answered %+v with %+v to %s, want a reply for %s at %s to the requester", l.r.ifi.Name, req, p, got.dst, req.TargetIP, mac)
	}
	if _, err := p.MarshalBinary(); err != nil {
		t.Fatalf("reply %+v does not marshal: %v", p, err)
	}
}

// fuzzNDP delivers payload from src to l as its ICMPv6 socket would: a
// parsed message and its IPv6 source (unspecified when src is not 16
// bytes, as in duplicate address detection).
func fuzzNDP(t *testing.T, l *fuzzLink, payload, src []byte) {
	m, err := ndp.ParseMessage(payload)
	if err != nil {
		return
	}
	from := netip.IPv6Unspecified()
	if len(src) >= 16 {
		from = netip.AddrFrom16([16]byte(src[:16]))
	}
	l.r.handleNS(m, from)

	if n := len(l.arp.sentSoFar()); n != 0 {
		t.Fatalf("an NDP message made %s send %d ARP packets", l.r.ifi.Name, n)
	}
	sent := l.ndp.sentSoFar()
	ns, isNS := m.(*ndp.NeighborSolicitation)
	var mac net.HardwareAddr
	want := false
	if isNS {
		var answered bool
		mac, answered = l.answers[ns.TargetAddress]
		want = answered && !solicitedBy(ns, l.r.ifi.HardwareAddr)
	}
	switch {
	case !want && len(sent) != 0:
		t.Fatalf("%s answered %T %+v with %+v", l.r.ifi.Name, m, m, sent[0].m)
	case want && len(sent) != 1:
		t.Fatalf("%s sent %d advertisements for its address %s, want 1", l.r.ifi.Name, len(sent), ns.TargetAddress)
	case !want:
		return
	}
	got := sent[0]
	na, ok := got.m.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("%s answered a solicitation with %T", l.r.ifi.Name, got.m)
	}
	dad := from.IsUnspecified()
	wantDst := from
	if dad {
		wantDst = allNodes
	}
	if na.TargetAddress != ns.TargetAddress || !na.Override || na.Solicited == dad || got.src != ns.TargetAddress ||
		got.dst != wantDst || !bytes.Equal(targetLLA(na), mac) {
		t.Fatalf("%s answered a solicitation for %s from %s with %+v from %s to %s, want an advertisement of %s to %s",
			l.r.ifi.Name, ns.TargetAddress, from, na, got.src, got.dst, mac, wantDst)
	}
	if _, err := ndp.MarshalMessage(na); err != nil {
		t.Fatalf("advertisement %+v does not marshal: %v", na, err)
	}
}

// solicitedBy reports a solicitation whose source link-layer option is
// mac.
func solicitedBy(ns *ndp.NeighborSolicitation, mac net.HardwareAddr) bool {
	for _, o := range ns.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
			return bytes.Equal(lla.Addr, mac)
		}
	}
	return false
}
