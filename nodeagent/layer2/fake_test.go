package layer2

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// wire is an in-memory socket: tests push what the interface receives with
// deliver and inspect what the responder sent with sentSoFar.
type wire[In, Out any] struct {
	in     chan In
	failc  chan error
	closed chan struct{}

	mu       sync.Mutex
	kick     chan struct{} // closed while the read deadline is in the past
	sent     []Out
	writeErr error
	onWrite  func() // runs inside every write, for race tests
	notify   chan struct{}
}

func newWire[In, Out any]() *wire[In, Out] {
	return &wire[In, Out]{
		in:     make(chan In),
		failc:  make(chan error, 1),
		closed: make(chan struct{}),
		kick:   make(chan struct{}),
		notify: make(chan struct{}, 1),
	}
}

func (w *wire[In, Out]) read() (In, error) {
	w.mu.Lock()
	kick := w.kick
	w.mu.Unlock()
	var zero In
	select {
	case v := <-w.in:
		return v, nil
	case err := <-w.failc:
		return zero, err
	case <-kick:
		return zero, os.ErrDeadlineExceeded
	case <-w.closed:
		return zero, net.ErrClosed
	}
}

func (w *wire[In, Out]) write(out Out) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.onWrite != nil {
		w.onWrite()
	}
	if w.writeErr != nil {
		return w.writeErr
	}
	w.sent = append(w.sent, out)
	select {
	case w.notify <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

// deliver hands v to the responder's reader, failing if nobody reads.
func (w *wire[In, Out]) deliver(t *testing.T, v In) {
	t.Helper()
	select {
	case w.in <- v:
	case <-time.After(5 * time.Second):
		t.Fatal("responder did not read the packet")
	}
}

// waitSent waits until n messages have been sent in total.
func (w *wire[In, Out]) waitSent(t *testing.T, n int) []Out {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if got := w.sentSoFar(); len(got) >= n {
			return got
		}
		select {
		case <-w.notify:
		case <-deadline:
			t.Fatalf("sent %d messages, want %d", len(w.sentSoFar()), n)
		}
	}
}

func (w *wire[In, Out]) sentSoFar() []Out {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Out(nil), w.sent...)
}

func (w *wire[In, Out]) setReadDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	past := !t.IsZero() && !t.After(time.Now())
	select {
	case <-w.kick:
		if !past {
			w.kick = make(chan struct{})
		}
	default:
		if past {
			close(w.kick)
		}
	}
	return nil
}

func (w *wire[In, Out]) close() error {
	select {
	case <-w.closed:
	default:
		close(w.closed)
	}
	return nil
}

type sentARP struct {
	p   *arp.Packet
	dst net.HardwareAddr
	at  time.Time
}

type fakeARP struct{ *wire[*arp.Packet, sentARP] }

func (f fakeARP) ReadFrom() (*arp.Packet, error) { return f.read() }
func (f fakeARP) WriteTo(p *arp.Packet, dst net.HardwareAddr) error {
	return f.write(sentARP{p: p, dst: dst, at: time.Now()})
}
func (f fakeARP) SetReadDeadline(t time.Time) error { return f.setReadDeadline(t) }
func (f fakeARP) Close() error                      { return f.close() }

type receivedNDP struct {
	m   ndp.Message
	src netip.Addr
}

type sentNDP struct {
	m        ndp.Message
	src, dst netip.Addr
	at       time.Time
}

type fakeNDP struct {
	*wire[receivedNDP, sentNDP]
	groups  map[netip.Addr]int // joins minus leaves
	joinErr error
}

func (f *fakeNDP) ReadFrom() (ndp.Message, netip.Addr, error) {
	r, err := f.read()
	return r.m, r.src, err
}
func (f *fakeNDP) WriteTo(m ndp.Message, src, dst netip.Addr) error {
	return f.write(sentNDP{m: m, src: src, dst: dst, at: time.Now()})
}
func (f *fakeNDP) JoinGroup(g netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.joinErr != nil {
		return f.joinErr
	}
	if f.groups[g] > 0 {
		return errors.New("fake: group already joined") // as the kernel: EADDRINUSE
	}
	f.groups[g]++
	return nil
}
func (f *fakeNDP) LeaveGroup(g netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.groups[g] == 0 {
		return errors.New("fake: group not joined")
	}
	f.groups[g]--
	return nil
}
func (f *fakeNDP) joined() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	var gs []netip.Addr
	for g, n := range f.groups {
		if n > 0 {
			gs = append(gs, g)
		}
	}
	return gs
}
func (f *fakeNDP) SetReadDeadline(t time.Time) error { return f.setReadDeadline(t) }
func (f *fakeNDP) Close() error                      { return f.close() }

func newFakeARP() fakeARP { return fakeARP{newWire[*arp.Packet, sentARP]()} }

func newFakeNDP() *fakeNDP {
	return &fakeNDP{wire: newWire[receivedNDP, sentNDP](), groups: map[netip.Addr]int{}}
}
