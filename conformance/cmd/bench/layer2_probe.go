package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/arp"

	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
)

// arpAnswer is one ARP packet claiming an address, seen by the client.
type arpAnswer struct {
	At  time.Time
	MAC string
	// Gratuitous: an announcement to the segment, not a reply to the
	// client.
	Gratuitous bool
}

// arpProbe is the client's view of many addresses at once: one ARP socket
// on the client's segment interface that asks who has each of a set of
// addresses (a sweep, or a loop every interval) and records, by address,
// every reply and gratuitous ARP claiming one. Unlike netlab.ARPWatch it
// follows any number of addresses with one socket.
type arpProbe struct {
	c      *arp.Client
	client string // the client's MAC: its own requests are not recorded
	done   chan struct{}
	wg     sync.WaitGroup

	mu   sync.Mutex
	seen map[netip.Addr][]arpAnswer
	// loopStop and loopDone drive the running probe loop, if any;
	// loopIPs are its addresses and rounds when each round was sent.
	loopStop, loopDone chan struct{}
	loopIPs            []netip.Addr
	rounds             []time.Time
}

// newARPProbe opens the probe's socket in the segment's client namespace;
// the lab closes it on Close, if the caller has not.
func newARPProbe(seg *netlab.L2) (*arpProbe, error) {
	p := &arpProbe{client: seg.ClientMAC.String(), done: make(chan struct{}), seen: map[netip.Addr][]arpAnswer{}}
	err := netlab.InNS(seg.Client, func() error {
		ifi, err := net.InterfaceByName(netlab.L2Interface)
		if err != nil {
			return err
		}
		p.c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ARP socket in the client: %w", err)
	}
	p.wg.Add(1)
	go p.read()
	seg.Lab.OnClose(func() error { p.Close(); return nil })
	return p, nil
}

// read records the replies and announcements until Close.
func (p *arpProbe) read() {
	defer p.wg.Done()
	netlab.ReadARP(p.c, p.done, func(pkt *arp.Packet) {
		mac := pkt.SenderHardwareAddr.String()
		if mac == p.client {
			return
		}
		var a arpAnswer
		switch {
		case pkt.Operation == arp.OperationReply && pkt.TargetHardwareAddr.String() == p.client:
			a = arpAnswer{MAC: mac}
		case pkt.SenderIP == pkt.TargetIP || pkt.Operation == arp.OperationReply:
			a = arpAnswer{MAC: mac, Gratuitous: true}
		default:
			return // someone else's request
		}
		a.At = time.Now()
		p.mu.Lock()
		p.seen[pkt.SenderIP] = append(p.seen[pkt.SenderIP], a)
		p.mu.Unlock()
	})
}

// Close stops the probe (and its loop). Idempotent.
func (p *arpProbe) Close() {
	p.stopLoop()
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.wg.Wait()
	_ = p.c.Close()
}

// answers returns what claimed ip in [from, to).
func (p *arpProbe) answers(ip netip.Addr, from, to time.Time) []arpAnswer {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []arpAnswer
	for _, a := range p.seen[ip] {
		if !a.At.Before(from) && a.At.Before(to) {
			out = append(out, a)
		}
	}
	return out
}

// forget drops what was recorded before t, to keep the record small.
func (p *arpProbe) forget(t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ip, as := range p.seen {
		i, _ := slices.BinarySearchFunc(as, t, func(a arpAnswer, t time.Time) int { return a.At.Compare(t) })
		if i == len(as) {
			delete(p.seen, ip)
		} else {
			p.seen[ip] = slices.Clone(as[i:])
		}
	}
}

// sweepPace spaces the requests of a sweep: 1,000 addresses in 200 ms, a
// rate the client's socket and the nodes' responders take without loss.
const sweepPace = 200 * time.Microsecond

// sweep asks once for every address in ips (again, up to twice, for those
// no reply came for within 300 ms) and returns, by address, the MACs that
// replied to the client (sorted; empty: unanswered). Gratuitous ARPs do not
// count: a sweep is what a client asking now would be told.
func (p *arpProbe) sweep(ctx context.Context, ips []netip.Addr) (map[netip.Addr][]string, error) {
	out := make(map[netip.Addr][]string, len(ips))
	todo := ips
	for try := 0; try < 3 && len(todo) > 0; try++ {
		start := time.Now()
		for i, ip := range todo {
			if err := p.c.Request(ip); err != nil {
				return nil, fmt.Errorf("ARP request for %s: %w", ip, err)
			}
			if i%10 == 9 {
				if err := pause(ctx, 10*sweepPace); err != nil {
					return nil, err
				}
			}
		}
		if err := pause(ctx, 300*time.Millisecond); err != nil {
			return nil, err
		}
		end := time.Now()
		var again []netip.Addr
		for _, ip := range todo {
			macs := map[string]bool{}
			for _, a := range p.answers(ip, start, end) {
				if !a.Gratuitous {
					macs[a.MAC] = true
				}
			}
			if len(macs) == 0 {
				again = append(again, ip)
				continue
			}
			for m := range macs {
				out[ip] = append(out[ip], m)
			}
			slices.Sort(out[ip])
		}
		todo = again
	}
	return out, nil
}

// startLoop asks for each of ips every interval, until stopLoop.
func (p *arpProbe) startLoop(ips []netip.Addr, every time.Duration) {
	p.stopLoop()
	stop, done := make(chan struct{}), make(chan struct{})
	p.mu.Lock()
	p.loopStop, p.loopDone, p.loopIPs, p.rounds = stop, done, slices.Clone(ips), nil
	p.mu.Unlock()
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			p.mu.Lock()
			p.rounds = append(p.rounds, time.Now())
			p.mu.Unlock()
			for _, ip := range ips {
				_ = p.c.Request(ip)
			}
			select {
			case <-stop:
				return
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
}

// stopLoop stops the probe loop, if one runs. The rounds it sent stay
// readable until the next startLoop.
func (p *arpProbe) stopLoop() {
	p.mu.Lock()
	stop, done := p.loopStop, p.loopDone
	p.loopStop, p.loopDone = nil, nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// splitRounds counts, over the loop's rounds in [from, to), the (round,
// address) pairs whose request more than one MAC replied to: two nodes
// answering at once.
func (p *arpProbe) splitRounds(from, to time.Time) int {
	p.mu.Lock()
	rounds, ips := slices.Clone(p.rounds), slices.Clone(p.loopIPs)
	p.mu.Unlock()
	n := 0
	for i, start := range rounds {
		if start.Before(from) || !start.Before(to) {
			continue
		}
		end := to
		if i+1 < len(rounds) {
			end = rounds[i+1]
		}
		for _, ip := range ips {
			macs := map[string]bool{}
			for _, a := range p.answers(ip, start, end) {
				if !a.Gratuitous {
					macs[a.MAC] = true
				}
			}
			if len(macs) > 1 {
				n++
			}
		}
	}
	return n
}
