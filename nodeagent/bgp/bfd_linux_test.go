//go:build linux

package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Why the router side of these tests is not a second GoBGP instance: GoBGP
// v4.8.0's BFD server always listens on the wildcard address (":3784",
// SO_REUSEADDR, no way to set the address or port). Two instances in one
// network namespace therefore both bind 0.0.0.0:3784, which Linux allows for
// UDP with SO_REUSEADDR but then delivers every unicast datagram to only one
// of the sockets (the most recently bound). The other instance never
// receives a control packet and stays down, and the receiving one sees its
// own packets as well, so it can even come "up" talking to itself.
// Distinct loopback addresses do not help: the listener is not bound to one,
// and the sender's source address is picked by the kernel (127.0.0.1 for any
// 127/8 destination), not by GoBGP.
//
// Instead, the router's BFD end is bfdResponder, a minimal RFC 5880
// asynchronous-mode peer bound to 127.0.0.2:3784. An address-specific socket
// wins over GoBGP's wildcard one for datagrams to 127.0.0.2, and packets
// sent from it carry source 127.0.0.2, which is how GoBGP's BFD server
// matches them to the neighbor. The speaker side is the real GoBGP BFD.

const bfdTestInterval = 100 * time.Millisecond

// bfdResponder answers the speaker's BFD session like a router would.
type bfdResponder struct {
	conn *net.UDPConn
	my   uint32

	mu     sync.Mutex
	state  bfd.StateType
	your   uint32
	remote *net.UDPAddr // the speaker's BFD port, learned from its packets
	silent bool         // stop transmitting, as a router that died would

	done chan struct{}
	wg   sync.WaitGroup
}

// skipIfBFDPortBusy skips when another process holds UDP 3784 without
// SO_REUSEADDR (a BFD daemon on the test host): GoBGP could not listen then.
func skipIfBFDPortBusy(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", server.BfdServerPort))
	if err != nil {
		t.Fatalf("UDP port %d is in use on this host, GoBGP's BFD cannot listen: %v", server.BfdServerPort, err)
	}
	c.Close()
}

func startBFDResponder(t *testing.T, addr string) *bfdResponder {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// Shares the port with GoBGP's wildcard listener, which sets it too.
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", fmt.Sprintf("%s:%d", addr, server.BfdServerPort))
	if err != nil {
		t.Fatalf("binding the test BFD responder: %v", err)
	}
	r := &bfdResponder{conn: pc.(*net.UDPConn), my: 0x5eed, state: bfd.StateDown, done: make(chan struct{})}
	r.wg.Add(2)
	go r.receive()
	go r.transmit()
	t.Cleanup(r.close)
	return r
}

func (r *bfdResponder) close() {
	select {
	case <-r.done:
		return
	default:
	}
	close(r.done)
	r.conn.Close()
	r.wg.Wait()
}

// goSilent stops transmitting and answering without signalling Down, which
// is what a crashed router or a cut link looks like.
func (r *bfdResponder) goSilent() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.silent = true
}

func (r *bfdResponder) receive() {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, src, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		var h bfd.BFDHeader
		if h.UnmarshalBinary(buf[:n]) != nil || h.MyDiscriminator == 0 {
			continue
		}
		r.mu.Lock()
		if !r.silent {
			r.remote = &net.UDPAddr{IP: src.IP, Port: server.BfdServerPort}
			r.your = h.MyDiscriminator
			r.state = nextBFDState(r.state, h.State)
			if h.Poll {
				r.sendLocked(true)
			}
		}
		r.mu.Unlock()
	}
}

// nextBFDState is RFC 5880 section 6.8.6's state machine without timers
// (detection on this side is not under test).
func nextBFDState(local, remote bfd.StateType) bfd.StateType {
	switch {
	case remote == bfd.StateAdminDown:
		return bfd.StateDown
	case local == bfd.StateDown && remote == bfd.StateDown:
		return bfd.StateInit
	case local == bfd.StateDown && remote == bfd.StateInit:
		return bfd.StateUp
	case local == bfd.StateInit && (remote == bfd.StateInit || remote == bfd.StateUp):
		return bfd.StateUp
	case local == bfd.StateUp && remote == bfd.StateDown:
		return bfd.StateDown
	}
	return local
}

func (r *bfdResponder) transmit() {
	defer r.wg.Done()
	tick := time.NewTicker(bfdTestInterval)
	defer tick.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-tick.C:
			r.mu.Lock()
			if !r.silent && r.remote != nil {
				r.sendLocked(false)
			}
			r.mu.Unlock()
		}
	}
}

func (r *bfdResponder) sendLocked(final bool) {
	h := bfd.BFDHeader{
		Version:               1,
		State:                 r.state,
		Final:                 final,
		DetectTimeMultiplier:  3,
		MyDiscriminator:       r.my,
		YourDiscriminator:     r.your,
		DesiredMinTxInterval:  uint32(bfdTestInterval.Microseconds()),
		RequiredMinRxInterval: uint32(bfdTestInterval.Microseconds()),
	}
	if b, err := h.MarshalBinary(); err == nil {
		_, _ = r.conn.WriteToUDP(b, r.remote)
	}
}

// TestBFDUpAndFastDetection proves that the BFD settings of a Peer run
// GoBGP's BFD for the neighbor, that BFDState follows it, and that a router
// going silent takes the BGP session down after about detect multiplier ×
// interval (3 × 100ms) instead of the 9s hold time.
func TestBFDUpAndFastDetection(t *testing.T) {
	skipIfBFDPortBusy(t)
	ctx := context.Background()
	r := startRouter(t, "127.0.0.2", true)
	resp := startBFDResponder(t, "127.0.0.2")
	s := newSpeaker(t)
	p := r.peer("leaf1")
	p.BFD = &BFD{DesiredMinTx: bfdTestInterval, RequiredMinRx: bfdTestInterval, DetectMultiplier: 3}
	if err := s.Apply(ctx, testGlobal, []Peer{p}, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// GoBGP starts its BFD listener and client about a second after the
	// neighbor is added.
	peerState(t, s, r.addr, 15*time.Second, "BGP established and BFD up", func(st PeerState) bool {
		return st.State == "established" && st.BFDState == "up"
	})

	resp.goSilent()
	start := time.Now()
	// Poll faster than the detection time; the session then stays down for
	// at least the 1s idle hold time, so the transition cannot be missed.
	var took time.Duration
	for took == 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("BGP session still established 5s after the router went silent")
		}
		states, err := s.States(ctx)
		if err != nil {
			t.Fatalf("States: %v", err)
		}
		if len(states) == 1 && states[0].State != "established" {
			took = time.Since(start)
			if states[0].BFDState != "down" {
				t.Errorf("BFDState = %q after detection, want down", states[0].BFDState)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("BGP session went down %s after the router went silent (detect time 3 × %s)", took, bfdTestInterval)
	if limit := 3*bfdTestInterval + 900*time.Millisecond; took > limit {
		t.Errorf("detection took %s, want about 3 × %s (at most %s)", took, bfdTestInterval, limit)
	}
}
