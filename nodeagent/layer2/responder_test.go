package layer2

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

var (
	ifMAC     = mustMAC("02:00:00:00:00:01") // the node's interface
	otherMAC  = mustMAC("02:00:00:00:00:02") // another node (externalTrafficPolicy Local)
	clientMAC = mustMAC("02:00:00:00:00:99")

	clientIP4 = netip.MustParseAddr("192.0.2.99")
	vip4      = netip.MustParseAddr("192.0.2.10")
	vip4b     = netip.MustParseAddr("192.0.2.11")
	clientIP6 = netip.MustParseAddr("2001:db8::99")
	vip6      = netip.MustParseAddr("2001:db8::10")

	testPrefixes = []netip.Prefix{
		netip.MustParsePrefix("192.0.2.1/24"),
		netip.MustParsePrefix("2001:db8::1/64"),
		netip.MustParsePrefix("fe80::1/64"),
	}
)

func mustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

type harness struct {
	r   *Responder
	arp fakeARP
	ndp *fakeNDP
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{arp: newFakeARP(), ndp: newFakeNDP()}
	ifi := &net.Interface{Index: 7, Name: "eth7", MTU: 1500, HardwareAddr: ifMAC, Flags: net.FlagUp}
	h.r = newResponder(ifi, opts, h.arp, h.ndp, func() ([]netip.Prefix, error) { return testPrefixes, nil })
	t.Cleanup(func() { _ = h.r.Close() })
	return h
}

func (h *harness) set(t *testing.T, answers map[netip.Addr]net.HardwareAddr) {
	t.Helper()
	if err := h.r.SetAnswers(answers); err != nil {
		t.Fatalf("SetAnswers: %v", err)
	}
}

// run starts Run and returns a function that stops it and returns its error.
func (h *harness) run(t *testing.T) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.r.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// answers reports whether a request for ip gets a reply.
func (h *harness) answers(ip netip.Addr) bool {
	before := len(h.arp.sentSoFar()) + len(h.ndp.sentSoFar())
	if ip.Is4() {
		h.r.handleARP(arpRequest(clientMAC, clientIP4, ip))
	} else {
		h.r.handleNS(neighborSolicitation(ip, clientMAC), clientIP6)
	}
	return len(h.arp.sentSoFar())+len(h.ndp.sentSoFar()) > before
}

func arpRequest(sha net.HardwareAddr, spa, tpa netip.Addr) *arp.Packet {
	p, err := arp.NewPacket(arp.OperationRequest, sha, spa, ethernetZero, tpa)
	if err != nil {
		panic(err)
	}
	return p
}

func neighborSolicitation(target netip.Addr, sourceMAC net.HardwareAddr) *ndp.NeighborSolicitation {
	ns := &ndp.NeighborSolicitation{TargetAddress: target}
	if sourceMAC != nil {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: sourceMAC}}
	}
	return ns
}

func TestARPAnswersConfiguredIPWithConfiguredMAC(t *testing.T) {
	for name, mac := range map[string]net.HardwareAddr{"own MAC": ifMAC, "another node's MAC": otherMAC} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.set(t, map[netip.Addr]net.HardwareAddr{vip4: mac})

			h.r.handleARP(arpRequest(clientMAC, clientIP4, vip4))

			sent := h.arp.sentSoFar()
			if len(sent) != 1 {
				t.Fatalf("sent %d packets, want 1 reply", len(sent))
			}
			got := sent[0]
			want := &arp.Packet{
				HardwareType: 1, ProtocolType: 0x0800, HardwareAddrLength: 6, IPLength: 4,
				Operation:          arp.OperationReply,
				SenderHardwareAddr: mac, SenderIP: vip4,
				TargetHardwareAddr: clientMAC, TargetIP: clientIP4,
			}
			if !equalARP(got.p, want) {
				t.Errorf("reply = %+v, want %+v", got.p, want)
			}
			if !bytes.Equal(got.dst, clientMAC) {
				t.Errorf("reply sent to %s, want the requester %s", got.dst, clientMAC)
			}
			if s := h.r.Stats(); s.ARPRequestsAnswered != 1 {
				t.Errorf("ARPRequestsAnswered = %d, want 1", s.ARPRequestsAnswered)
			}
		})
	}
}

func equalARP(a, b *arp.Packet) bool {
	ab, _ := a.MarshalBinary()
	bb, _ := b.MarshalBinary()
	return bytes.Equal(ab, bb)
}

func TestARPAnswersProbe(t *testing.T) {
	h := newHarness(t, Options{})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC})
	unspecified := netip.IPv4Unspecified()

	h.r.handleARP(arpRequest(clientMAC, unspecified, vip4))

	sent := h.arp.sentSoFar()
	if len(sent) != 1 || sent[0].p.TargetIP != unspecified || !bytes.Equal(sent[0].dst, clientMAC) {
		t.Fatalf("want one reply to the prober at 0.0.0.0, sent %+v", sent)
	}
}

func TestARPIgnores(t *testing.T) {
	reply := arpRequest(clientMAC, clientIP4, vip4)
	reply.Operation = arp.OperationReply
	tests := map[string]*arp.Packet{
		"request for another IP":         arpRequest(clientMAC, clientIP4, vip4b),
		"request from our own MAC":       arpRequest(ifMAC, netip.MustParseAddr("192.0.2.1"), vip4),
		"gratuitous ARP for our IP":      arpRequest(clientMAC, vip4, vip4),
		"reply":                          reply,
		"request for the interface's IP": arpRequest(clientMAC, clientIP4, netip.MustParseAddr("192.0.2.1")),
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC})
			h.r.handleARP(p)
			if sent := h.arp.sentSoFar(); len(sent) != 0 {
				t.Fatalf("sent %+v, want nothing", sent[0].p)
			}
		})
	}
}

func TestARPCountsConflictingClaims(t *testing.T) {
	h := newHarness(t, Options{})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: otherMAC})

	h.r.handleARP(arpRequest(otherMAC, vip4, vip4))  // the MAC we answer with: no conflict
	h.r.handleARP(arpRequest(clientMAC, vip4, vip4)) // someone else announces our IP
	reply := arpRequest(clientMAC, vip4, clientIP4)
	reply.Operation = arp.OperationReply
	h.r.handleARP(reply) // or answers for it

	if s := h.r.Stats(); s.ARPConflicts != 2 {
		t.Fatalf("ARPConflicts = %d, want 2", s.ARPConflicts)
	}
	if sent := h.arp.sentSoFar(); len(sent) != 0 {
		t.Fatalf("answered an announcement or reply: %+v", sent[0].p)
	}
}

func TestNDPAnswersWithSolicitedOverrideAndTargetMAC(t *testing.T) {
	for name, mac := range map[string]net.HardwareAddr{"own MAC": ifMAC, "another node's MAC": otherMAC} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.set(t, map[netip.Addr]net.HardwareAddr{vip6: mac})

			h.r.handleNS(neighborSolicitation(vip6, clientMAC), clientIP6)

			sent := h.ndp.sentSoFar()
			if len(sent) != 1 {
				t.Fatalf("sent %d messages, want 1 advertisement", len(sent))
			}
			na, ok := sent[0].m.(*ndp.NeighborAdvertisement)
			if !ok {
				t.Fatalf("sent %T, want *ndp.NeighborAdvertisement", sent[0].m)
			}
			if !na.Solicited || !na.Override || na.Router {
				t.Errorf("flags S=%t O=%t R=%t, want S and O set, R clear", na.Solicited, na.Override, na.Router)
			}
			if na.TargetAddress != vip6 {
				t.Errorf("target %s, want %s", na.TargetAddress, vip6)
			}
			if got := targetLLA(na); !bytes.Equal(got, mac) {
				t.Errorf("target link-layer address %s, want %s", got, mac)
			}
			if sent[0].src != vip6 {
				t.Errorf("sent from %s, want the target address %s (ndisc6 ignores others)", sent[0].src, vip6)
			}
			if sent[0].dst != clientIP6 {
				t.Errorf("sent to %s, want the solicitor %s", sent[0].dst, clientIP6)
			}
			if s := h.r.Stats(); s.NeighborSolicitationsAnswered != 1 {
				t.Errorf("NeighborSolicitationsAnswered = %d, want 1", s.NeighborSolicitationsAnswered)
			}
		})
	}
}

func targetLLA(na *ndp.NeighborAdvertisement) net.HardwareAddr {
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			return lla.Addr
		}
	}
	return nil
}

func TestNDPAnswersDuplicateAddressDetectionToAllNodes(t *testing.T) {
	h := newHarness(t, Options{})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip6: ifMAC})

	h.r.handleNS(neighborSolicitation(vip6, nil), netip.IPv6Unspecified())

	sent := h.ndp.sentSoFar()
	if len(sent) != 1 {
		t.Fatalf("sent %d messages, want 1", len(sent))
	}
	na := sent[0].m.(*ndp.NeighborAdvertisement)
	if sent[0].dst != allNodes || na.Solicited || !na.Override {
		t.Errorf("sent to %s with S=%t O=%t, want ff02::1 with S clear and O set", sent[0].dst, na.Solicited, na.Override)
	}
}

func TestNDPIgnores(t *testing.T) {
	tests := map[string]struct {
		m   ndp.Message
		src netip.Addr
	}{
		"solicitation for another IP":   {neighborSolicitation(netip.MustParseAddr("2001:db8::11"), clientMAC), clientIP6},
		"solicitation from our own MAC": {neighborSolicitation(vip6, ifMAC), netip.MustParseAddr("2001:db8::1")},
		"not a solicitation":            {&ndp.RouterSolicitation{}, clientIP6},
		"advertisement for our IP": {&ndp.NeighborAdvertisement{Override: true, TargetAddress: vip6,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: clientMAC}}}, clientIP6},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.set(t, map[netip.Addr]net.HardwareAddr{vip6: ifMAC})
			h.r.handleNS(tc.m, tc.src)
			if sent := h.ndp.sentSoFar(); len(sent) != 0 {
				t.Fatalf("sent %+v, want nothing", sent[0].m)
			}
		})
	}
}

func TestSetAnswersRejectsAndNamesBadEntries(t *testing.T) {
	tests := map[string]struct {
		ip   netip.Addr
		mac  net.HardwareAddr
		want error
	}{
		"IPv4 outside the subnets": {netip.MustParseAddr("198.51.100.10"), ifMAC, ErrOutsideSubnets},
		"IPv6 outside the subnets": {netip.MustParseAddr("2001:db8:1::10"), ifMAC, ErrOutsideSubnets},
		"the interface's own IPv4": {netip.MustParseAddr("192.0.2.1"), ifMAC, ErrInterfaceAddress},
		"the interface's own IPv6": {netip.MustParseAddr("2001:db8::1"), ifMAC, ErrInterfaceAddress},
		"link-local IPv6":          {netip.MustParseAddr("fe80::10"), ifMAC, ErrInvalidAddr},
		"multicast":                {netip.MustParseAddr("224.0.0.5"), ifMAC, ErrInvalidAddr},
		"zero address":             {netip.Addr{}, ifMAC, ErrInvalidAddr},
		"multicast MAC":            {vip4b, mustMAC("01:00:5e:00:00:01"), ErrInvalidHardwareAddr},
		"all-zero MAC":             {vip4b, mustMAC("00:00:00:00:00:00"), ErrInvalidHardwareAddr},
		"not an Ethernet MAC":      {vip4b, net.HardwareAddr{1, 2, 3}, ErrInvalidHardwareAddr},
		"missing MAC":              {vip4b, nil, ErrInvalidHardwareAddr},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Options{})
			err := h.r.SetAnswers(map[netip.Addr]net.HardwareAddr{tc.ip: tc.mac, vip4: ifMAC})

			if !errors.Is(err, tc.want) {
				t.Fatalf("SetAnswers error = %v, want %v", err, tc.want)
			}
			var rej *RejectedError
			if !errors.As(err, &rej) || len(rej.Errs) != 1 || rej.Errs[0].Addr != tc.ip || rej.Errs[0].Interface != "eth7" {
				t.Fatalf("want a RejectedError naming only %s on eth7, got %#v", tc.ip, err)
			}
			if !strings.Contains(err.Error(), tc.ip.String()) || !strings.Contains(err.Error(), "eth7") {
				t.Errorf("error %q does not name the IP and interface", err)
			}
			// The valid entry still took effect; the rejected one did not.
			if !h.answers(vip4) {
				t.Errorf("%s not answered", vip4)
			}
			if tc.ip.IsValid() && h.answers(tc.ip) {
				t.Errorf("%s answered", tc.ip)
			}
		})
	}
}

func TestSetAnswersWithoutIPv6RejectsIPv6(t *testing.T) {
	ifi := &net.Interface{Index: 7, Name: "eth7", HardwareAddr: ifMAC, Flags: net.FlagUp}
	r := newResponder(ifi, Options{}, newFakeARP(), nil, func() ([]netip.Prefix, error) { return testPrefixes, nil })
	err := r.SetAnswers(map[netip.Addr]net.HardwareAddr{vip6: ifMAC, vip4: ifMAC})
	if !errors.Is(err, ErrFamilyUnavailable) || !strings.Contains(err.Error(), vip6.String()) {
		t.Fatalf("SetAnswers error = %v, want ErrFamilyUnavailable naming %s", err, vip6)
	}
}

func TestSetAnswersWhenPrefixesUnreadable(t *testing.T) {
	h := newHarness(t, Options{})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC})
	boom := errors.New("interface vanished")
	h.r.prefixes = func() ([]netip.Prefix, error) { return nil, boom }

	if err := h.r.SetAnswers(map[netip.Addr]net.HardwareAddr{vip4: ifMAC}); !errors.Is(err, boom) {
		t.Fatalf("SetAnswers error = %v, want it to wrap %v", err, boom)
	}
	h.r.handleARP(arpRequest(clientMAC, clientIP4, vip4))
	if n := len(h.arp.sentSoFar()); n != 0 {
		t.Fatalf("answered %d requests for an address that could not be validated", n)
	}
	if err := h.r.SetAnswers(nil); err != nil {
		t.Fatalf("SetAnswers(nil) must always succeed: %v", err)
	}
}

func TestSetAnswersNormalizesAndCopies(t *testing.T) {
	h := newHarness(t, Options{})
	mac := append(net.HardwareAddr(nil), otherMAC...)
	mapped := netip.AddrFrom16(vip4.As16())
	h.set(t, map[netip.Addr]net.HardwareAddr{mapped: mac})
	mac[5] = 0x77 // the caller reuses its slice

	h.r.handleARP(arpRequest(clientMAC, clientIP4, vip4))

	sent := h.arp.sentSoFar()
	if len(sent) != 1 || !bytes.Equal(sent[0].p.SenderHardwareAddr, otherMAC) {
		t.Fatalf("want one reply with %s, got %+v", otherMAC, sent)
	}
}

func TestSetAnswersManagesSolicitedNodeGroups(t *testing.T) {
	h := newHarness(t, Options{})
	a := netip.MustParseAddr("2001:db8::aa:bbcc")
	b := netip.MustParseAddr("2001:db8::1:aa:bbcc") // same low 24 bits: same group
	group := netip.MustParseAddr("ff02::1:ffaa:bbcc")

	h.set(t, map[netip.Addr]net.HardwareAddr{a: ifMAC, b: ifMAC, vip4: ifMAC})
	if got := h.ndp.joined(); len(got) != 1 || got[0] != group {
		t.Fatalf("joined %v, want only %s", got, group)
	}
	h.set(t, map[netip.Addr]net.HardwareAddr{b: ifMAC})
	if got := h.ndp.joined(); len(got) != 1 || got[0] != group {
		t.Fatalf("after removing one of two addresses joined %v, want %s kept", got, group)
	}
	h.set(t, nil)
	if got := h.ndp.joined(); len(got) != 0 {
		t.Fatalf("after removing all addresses still joined %v", got)
	}
}

func TestSetAnswersRejectsAddressWhoseGroupCannotBeJoined(t *testing.T) {
	h := newHarness(t, Options{})
	h.ndp.joinErr = errors.New("no buffer space")
	err := h.r.SetAnswers(map[netip.Addr]net.HardwareAddr{vip6: ifMAC, vip4: ifMAC})
	if err == nil || !strings.Contains(err.Error(), vip6.String()) {
		t.Fatalf("SetAnswers error = %v, want one naming %s", err, vip6)
	}
	h.r.handleNS(neighborSolicitation(vip6, clientMAC), clientIP6)
	if n := len(h.ndp.sentSoFar()); n != 0 {
		t.Fatalf("answered for an address whose group was not joined")
	}
}

func TestRunAnswersBothFamilies(t *testing.T) {
	h := newHarness(t, Options{})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC, vip6: otherMAC})
	h.run(t)

	h.arp.deliver(t, arpRequest(clientMAC, clientIP4, vip4))
	h.ndp.deliver(t, receivedNDP{neighborSolicitation(vip6, clientMAC), clientIP6})

	if got := h.arp.waitSent(t, 1)[0].p.SenderHardwareAddr; !bytes.Equal(got, ifMAC) {
		t.Errorf("ARP answered with %s, want %s", got, ifMAC)
	}
	if got := targetLLA(h.ndp.waitSent(t, 1)[0].m.(*ndp.NeighborAdvertisement)); !bytes.Equal(got, otherMAC) {
		t.Errorf("NDP answered with %s, want %s", got, otherMAC)
	}
}

// TestRemovalStopsAnswersImmediately floods requests while the answers are
// removed: no reply may be written once SetAnswers(nil) or Close returned.
func TestRemovalStopsAnswersImmediately(t *testing.T) {
	removals := map[string]func(*Responder) error{
		"SetAnswers(nil)": func(r *Responder) error { return r.SetAnswers(nil) },
		"Close":           func(r *Responder) error { return r.Close() },
	}
	for name, remove := range removals {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC, vip6: ifMAC})
			var removed, late atomic.Bool
			h.arp.onWrite = func() { late.Store(late.Load() || removed.Load()) }
			h.ndp.onWrite = func() { late.Store(late.Load() || removed.Load()) }
			h.run(t)

			stopFlood := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				flood(stopFlood, h.arp.in, arpRequest(clientMAC, clientIP4, vip4))
			}()
			go func() {
				defer wg.Done()
				flood(stopFlood, h.ndp.in, receivedNDP{neighborSolicitation(vip6, clientMAC), clientIP6})
			}()
			h.arp.waitSent(t, 10)
			h.ndp.waitSent(t, 10)

			if err := remove(h.r); err != nil {
				t.Fatal(err)
			}
			removed.Store(true)
			time.Sleep(50 * time.Millisecond) // let more requests through
			close(stopFlood)
			wg.Wait()

			if late.Load() {
				t.Fatal("a reply was sent after the answers were removed")
			}
		})
	}
}

func flood[T any](stop <-chan struct{}, in chan<- T, v T) {
	for {
		select {
		case in <- v:
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond): // the reader ended (Close)
		}
	}
}

func TestAnnounceDefaults(t *testing.T) {
	h := newHarness(t, Options{})
	if h.r.count != 3 || h.r.interval != 1100*time.Millisecond {
		t.Fatalf("defaults: %d announcements %v apart, want 3 1.1s apart", h.r.count, h.r.interval)
	}
}

func TestAnnounceCountAndInterval(t *testing.T) {
	const count, interval = 4, 40 * time.Millisecond
	h := newHarness(t, Options{AnnounceCount: count, AnnounceInterval: interval})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: otherMAC, vip6: otherMAC})

	if err := h.r.Announce(context.Background(), []netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}

	garps := h.arp.sentSoFar()
	nas := h.ndp.sentSoFar()
	if len(garps) != count || len(nas) != count {
		t.Fatalf("sent %d gratuitous ARPs and %d NAs, want %d each", len(garps), len(nas), count)
	}
	for i, g := range garps {
		p := g.p
		if p.Operation != arp.OperationRequest || p.SenderIP != vip4 || p.TargetIP != vip4 ||
			!bytes.Equal(p.SenderHardwareAddr, otherMAC) || !bytes.Equal(g.dst, ethernetBroadcast) {
			t.Errorf("gratuitous ARP %d = %+v to %s, want a broadcast request %s is-at %s", i, p, g.dst, vip4, otherMAC)
		}
		if i > 0 && g.at.Sub(garps[i-1].at) < interval {
			t.Errorf("gratuitous ARPs %d and %d only %v apart, want >= %v", i-1, i, g.at.Sub(garps[i-1].at), interval)
		}
	}
	for i, s := range nas {
		na := s.m.(*ndp.NeighborAdvertisement)
		if na.Solicited || !na.Override || na.TargetAddress != vip6 || !bytes.Equal(targetLLA(na), otherMAC) ||
			s.src != vip6 || s.dst != allNodes {
			t.Errorf("NA %d = %+v from %s to %s, want unsolicited override for %s from it to ff02::1", i, na, s.src, s.dst, vip6)
		}
		if i > 0 && s.at.Sub(nas[i-1].at) < interval {
			t.Errorf("NAs %d and %d only %v apart, want >= %v", i-1, i, s.at.Sub(nas[i-1].at), interval)
		}
	}
	if s := h.r.Stats(); s.GratuitousARPsSent != count || s.UnsolicitedNAsSent != count {
		t.Errorf("stats %+v, want %d of each", s, count)
	}
}

func TestAnnounceDoesNotBlockAnswering(t *testing.T) {
	h := newHarness(t, Options{AnnounceCount: 2, AnnounceInterval: time.Hour})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC})
	h.run(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.r.Announce(ctx, []netip.Addr{vip4}) }()
	h.arp.waitSent(t, 1) // first announcement out; Announce now waits an hour

	h.arp.deliver(t, arpRequest(clientMAC, clientIP4, vip4))
	if got := h.arp.waitSent(t, 2)[1].p; got.Operation != arp.OperationReply {
		t.Fatalf("second packet = %+v, want the reply", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Announce = %v, want context.Canceled", err)
	}
}

func TestAnnounceOnlyAnsweredAddresses(t *testing.T) {
	h := newHarness(t, Options{AnnounceCount: 3, AnnounceInterval: 30 * time.Millisecond})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC})
	done := make(chan error, 1)
	go func() { done <- h.r.Announce(context.Background(), []netip.Addr{vip4, vip4b}) }()
	h.arp.waitSent(t, 1)
	h.set(t, nil) // leadership lost between rounds

	err := <-done
	if !errors.Is(err, ErrNotAnswered) || !strings.Contains(err.Error(), vip4b.String()) {
		t.Fatalf("Announce = %v, want ErrNotAnswered naming %s", err, vip4b)
	}
	sent := h.arp.sentSoFar()
	if len(sent) != 1 || sent[0].p.SenderIP != vip4 {
		t.Fatalf("sent %d announcements, want exactly one, for %s", len(sent), vip4)
	}
}

func TestAnnounceCountsSendErrors(t *testing.T) {
	h := newHarness(t, Options{AnnounceCount: 1})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC})
	h.arp.writeErr = errors.New("no buffer space")
	if err := h.r.Announce(context.Background(), []netip.Addr{vip4}); err == nil || !strings.Contains(err.Error(), vip4.String()) {
		t.Fatalf("Announce = %v, want an error naming %s", err, vip4)
	}
	if s := h.r.Stats(); s.SendErrors != 1 || s.GratuitousARPsSent != 0 {
		t.Fatalf("stats %+v, want one send error", s)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	h := newHarness(t, Options{})
	stop := h.run(t)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil after its context ended", err)
	}
	// Run can serve again afterwards (the old deadline is cleared).
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: ifMAC})
	h.run(t)
	h.arp.deliver(t, arpRequest(clientMAC, clientIP4, vip4))
	h.arp.waitSent(t, 1)
}

func TestRunReturnsSocketError(t *testing.T) {
	h := newHarness(t, Options{})
	boom := errors.New("device gone")
	h.ndp.failc <- boom
	err := h.r.Run(context.Background())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "eth7") {
		t.Fatalf("Run = %v, want it to wrap %v and name eth7", err, boom)
	}
}

func TestRunRefusesSecondConcurrentRun(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(t)
	deadline := time.Now().Add(5 * time.Second)
	for !h.r.running.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := h.r.Run(context.Background()); err == nil {
		t.Fatal("second concurrent Run succeeded")
	}
}

func TestCloseEndsRunAndRefusesAnswers(t *testing.T) {
	h := newHarness(t, Options{})
	done := make(chan error, 1)
	go func() { done <- h.r.Run(context.Background()) }()
	if err := h.r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after Close, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if err := h.r.SetAnswers(map[netip.Addr]net.HardwareAddr{vip4: ifMAC}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetAnswers after Close = %v, want ErrClosed", err)
	}
	if err := h.r.SetAnswers(nil); err != nil {
		t.Fatalf("SetAnswers(nil) after Close = %v, want nil", err)
	}
}

func TestNewRefusesUnusableInterface(t *testing.T) {
	lo := &net.Interface{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback}
	if _, err := New(lo, Options{}); !errors.Is(err, ErrLoopback) {
		t.Fatalf("New(lo) = %v, want ErrLoopback", err)
	}
	down := &net.Interface{Index: 9, Name: "eth9", HardwareAddr: ifMAC}
	if _, err := New(down, Options{}); !errors.Is(err, ErrInterfaceDown) {
		t.Fatalf("New(down) = %v, want ErrInterfaceDown", err)
	}
	tun := &net.Interface{Index: 10, Name: "tun0", Flags: net.FlagUp}
	if _, err := New(tun, Options{}); !errors.Is(err, ErrNotEthernet) {
		t.Fatalf("New(tun0) = %v, want ErrNotEthernet", err)
	}
}

// TestAnnouncePaced takes over 100 addresses at a rate of 400 announcements
// per second (burst 50): the rounds together take at least the time the
// rate allows, and every address is still announced count times.
func TestAnnouncePaced(t *testing.T) {
	const n, count, perSecond = 100, 2, 400
	h := newHarness(t, Options{AnnounceCount: count, AnnounceInterval: time.Millisecond, AnnounceRate: perSecond})
	answers := map[netip.Addr]net.HardwareAddr{}
	var addrs []netip.Addr
	for i := range n {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)})
		answers[a] = otherMAC
		addrs = append(addrs, a)
	}
	h.set(t, answers)
	if err := h.r.Announce(context.Background(), addrs); err != nil {
		t.Fatal(err)
	}
	sent := h.arp.sentSoFar()
	if len(sent) != n*count {
		t.Fatalf("sent %d gratuitous ARPs, want %d", len(sent), n*count)
	}
	// 200 packets, 50 of them free: at least 150/400 s between the first
	// and the last.
	minSpan := time.Duration(float64(n*count-announceBurst) / perSecond * float64(time.Second))
	if span := sent[len(sent)-1].at.Sub(sent[0].at); span < minSpan*9/10 {
		t.Errorf("%d announcements went out in %v, want them paced over at least %v", len(sent), span, minSpan)
	}
	// One round reaches every address before the next round starts.
	seen := map[netip.Addr]bool{}
	for _, s := range sent[:n] {
		seen[s.p.SenderIP] = true
	}
	if len(seen) != n {
		t.Errorf("the first %d announcements covered %d addresses, want all %d", n, len(seen), n)
	}
}

// TestAnnouncePacingEndsWithContext: a cancelled Announce stops waiting for
// its pace and says so.
func TestAnnouncePacingEndsWithContext(t *testing.T) {
	h := newHarness(t, Options{AnnounceCount: 1, AnnounceRate: 1})
	var addrs []netip.Addr
	answers := map[netip.Addr]net.HardwareAddr{}
	for i := range 5 {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)})
		answers[a] = otherMAC
		addrs = append(addrs, a)
	}
	h.set(t, answers)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := h.r.Announce(ctx, addrs)
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("Announce at 1/s of 5 addresses with a 200ms context returned %v after %v, want the context's error at once", err, time.Since(start))
	}
	if got := len(h.arp.sentSoFar()); got != 1 {
		t.Errorf("sent %d before the context ended, want 1 (the burst)", got)
	}
}

// TestARPConflictLogIsRateLimited: a host claiming an answered address many
// times a second is counted every time and logged once per address per
// conflictLogEvery.
func TestARPConflictLogIsRateLimited(t *testing.T) {
	h := newHarness(t, Options{})
	h.set(t, map[netip.Addr]net.HardwareAddr{vip4: otherMAC, vip4b: otherMAC})
	now := time.Now()
	logged := 0
	for i := range 1000 {
		if h.r.shouldLogConflict(vip4, now.Add(time.Duration(i)*time.Millisecond)) {
			logged++
		}
	}
	if logged != 1 {
		t.Errorf("1000 conflicts within a second logged %d times, want once", logged)
	}
	if !h.r.shouldLogConflict(vip4b, now) {
		t.Error("a conflict on another address was not logged")
	}
	if !h.r.shouldLogConflict(vip4, now.Add(conflictLogEvery)) {
		t.Error("a conflict a minute later was not logged")
	}
	for range 50 {
		h.r.handleARP(arpRequest(clientMAC, vip4, vip4))
	}
	if s := h.r.Stats(); s.ARPConflicts != 50 {
		t.Errorf("ARPConflicts = %d, want every one of 50 counted", s.ARPConflicts)
	}
}
