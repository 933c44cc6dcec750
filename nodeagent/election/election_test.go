package election

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLeaseTimingsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    LeaseTimings
		ok   bool
	}{
		{"defaults", DefaultLeaseTimings, true},
		{"one second", LeaseTimings{Duration: time.Second, RenewDeadline: 600 * time.Millisecond, RetryPeriod: 200 * time.Millisecond}, true},
		{"fractional seconds", LeaseTimings{Duration: 2500 * time.Millisecond, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond}, false},
		{"below a second", LeaseTimings{Duration: 500 * time.Millisecond, RenewDeadline: 300 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}, false},
		{"deadline not below duration", LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond}, false},
		{"deadline within one loop turn of duration", LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 1990 * time.Millisecond, RetryPeriod: 500 * time.Millisecond}, false},
		{"retry not below deadline", LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 500 * time.Millisecond}, false},
		{"zero retry", LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.t.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v, want ok=%v", tc.t, err, tc.ok)
			}
		})
	}
}

// memLeases is an API server for Leases in memory: optimistic concurrency
// on resourceVersion, and change notifications like a watch.
type memLeases struct {
	mu      sync.Mutex
	rv      int
	leases  map[string]*coordinationv1.Lease
	waiters map[string]chan struct{}
	writes  atomic.Int64
}

func newMemLeases() *memLeases {
	return &memLeases{leases: map[string]*coordinationv1.Lease{}, waiters: map[string]chan struct{}{}}
}

func (s *memLeases) Get(_ context.Context, name string) (*coordinationv1.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[name]
	if !ok {
		return nil, apierrors.NewNotFound(coordinationv1.Resource("leases"), name)
	}
	return l.DeepCopy(), nil
}

func (s *memLeases) Changed(name string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.waiters[name]
	if ch == nil {
		ch = make(chan struct{})
		s.waiters[name] = ch
	}
	return ch
}

func (s *memLeases) store(l *coordinationv1.Lease) *coordinationv1.Lease {
	s.rv++
	l = l.DeepCopy()
	l.ResourceVersion = strconv.Itoa(s.rv)
	s.leases[l.Name] = l
	s.writes.Add(1)
	if ch := s.waiters[l.Name]; ch != nil {
		close(ch)
		delete(s.waiters, l.Name)
	}
	return l.DeepCopy()
}

func (s *memLeases) Create(_ context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.leases[l.Name]; ok {
		return nil, apierrors.NewAlreadyExists(coordinationv1.Resource("leases"), l.Name)
	}
	return s.store(l), nil
}

func (s *memLeases) Update(_ context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.leases[l.Name]
	if !ok {
		return nil, apierrors.NewNotFound(coordinationv1.Resource("leases"), l.Name)
	}
	if cur.ResourceVersion != l.ResourceVersion {
		return nil, apierrors.NewConflict(coordinationv1.Resource("leases"), l.Name, errors.New("resourceVersion changed"))
	}
	return s.store(l), nil
}

func (s *memLeases) holder(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.leases[name]; l != nil && l.Spec.HolderIdentity != nil {
		return *l.Spec.HolderIdentity
	}
	return ""
}

// cutOff is one node's view of the store: while down, its writes fail as
// if the API server were unreachable from that node.
type cutOff struct {
	*memLeases
	down   atomic.Bool
	lastOK atomic.Int64 // unix nanos of the last successful write
}

var errUnreachable = errors.New("connection refused")

func (c *cutOff) Create(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	if c.down.Load() {
		return nil, errUnreachable
	}
	out, err := c.memLeases.Create(ctx, l)
	if err == nil {
		c.lastOK.Store(time.Now().UnixNano())
	}
	return out, err
}

func (c *cutOff) Update(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	if c.down.Load() {
		return nil, errUnreachable
	}
	out, err := c.memLeases.Update(ctx, l)
	if err == nil {
		c.lastOK.Store(time.Now().UnixNano())
	}
	return out, err
}

// arbiter records leadership terms across candidates and fails the test
// the moment two overlap.
type arbiter struct {
	t       *testing.T
	mu      sync.Mutex
	leading map[string]bool
	events  []event
}

type event struct {
	who     string
	started bool
	at      time.Time
}

type contender struct {
	a    *arbiter
	name string
	cur  *Term
}

func (c *contender) Started(ctx context.Context, tm *Term) {
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	for other, on := range c.a.leading {
		if on && other != c.name {
			c.a.t.Errorf("split brain: %s started leading while %s leads", c.name, other)
		}
	}
	c.cur = tm
	c.a.leading[c.name] = true
	c.a.events = append(c.a.events, event{c.name, true, time.Now()})
}

func (c *contender) Ended(tm *Term) {
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	if c.cur != tm || !c.a.leading[c.name] {
		return
	}
	c.a.leading[c.name] = false
	c.a.events = append(c.a.events, event{c.name, false, time.Now()})
}

func (a *arbiter) leader() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	for n, on := range a.leading {
		if on {
			return n
		}
	}
	return ""
}

// last returns the time of who's last start (started) or end.
func (a *arbiter) last(who string, started bool) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.events) - 1; i >= 0; i-- {
		if e := a.events[i]; e.who == who && e.started == started {
			return e.at
		}
	}
	return time.Time{}
}

var testTimings = LeaseTimings{Duration: time.Second, RenewDeadline: 600 * time.Millisecond, RetryPeriod: 200 * time.Millisecond}

func startCandidate(t *testing.T, a *arbiter, store Store, name string) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := Candidate{Store: store, Namespace: "openelb-system", Name: "openelb-layer2-pool", Identity: name,
		Timings: testTimings, Meta: func() metav1.ObjectMeta { return metav1.ObjectMeta{} }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Campaign(ctx, c, &contender{a: a, name: name})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("campaign of %s did not end", name)
		}
	})
	return cancel
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Now()
}

// TestElectionHandover: one leader among candidates; cancelling it (SIGTERM)
// releases the Lease and another candidate leads within a few hundred
// milliseconds, never overlapping.
func TestElectionHandover(t *testing.T) {
	store := newMemLeases()
	a := &arbiter{t: t, leading: map[string]bool{}}
	stopA := startCandidate(t, a, store, "node-a")
	waitFor(t, "node-a leads", 3*time.Second, func() bool { return a.leader() == "node-a" })
	startCandidate(t, a, store, "node-b")
	startCandidate(t, a, store, "node-c")

	// The leader keeps the Lease, renewing every RetryPeriod and no more.
	w0 := store.writes.Load()
	time.Sleep(2 * time.Second)
	if got := a.leader(); got != "node-a" {
		t.Fatalf("leader changed to %q while node-a renews", got)
	}
	if n := store.writes.Load() - w0; n < 5 || n > 12 {
		t.Errorf("%d Lease writes in 2s, want about 10 (one renewal per %v)", n, testTimings.RetryPeriod)
	}

	t0 := time.Now()
	stopA()
	took := waitFor(t, "another node leads", 2*time.Second, func() bool { l := a.leader(); return l != "" && l != "node-a" }).Sub(t0)
	t.Logf("planned handover took %v", took)
	if took > 300*time.Millisecond {
		t.Errorf("planned handover took %v, want ≤ 300ms", took)
	}
	if end, next := a.last("node-a", false), a.last(a.leader(), true); end.IsZero() || !end.Before(next) {
		t.Errorf("node-a stopped at %v, the new leader started at %v: want stop before start", end, next)
	}
}

// TestElectionLeaderCutOff: a leader whose writes fail (API server
// unreachable from its node) stops leading within the renew deadline, and
// only then, a lease duration after its last renewal, another takes over.
func TestElectionLeaderCutOff(t *testing.T) {
	mem := newMemLeases()
	a := &arbiter{t: t, leading: map[string]bool{}}
	viewA := &cutOff{memLeases: mem}
	startCandidate(t, a, viewA, "node-a")
	waitFor(t, "node-a leads", 3*time.Second, func() bool { return a.leader() == "node-a" })
	startCandidate(t, a, mem, "node-b")
	time.Sleep(500 * time.Millisecond)

	viewA.down.Store(true)
	waitFor(t, "node-b leads", 5*time.Second, func() bool { return a.leader() == "node-b" })
	lastRenewal := time.Unix(0, viewA.lastOK.Load())
	stopped, took := a.last("node-a", false), a.last("node-b", true).Sub(lastRenewal)
	t.Logf("node-a stopped %v after its last renewal; node-b took over %v after it", stopped.Sub(lastRenewal), took)
	if d := stopped.Sub(lastRenewal); d > testTimings.RenewDeadline+testTimings.RetryPeriod {
		t.Errorf("node-a stopped %v after its last renewal, want within the renew deadline", d)
	}
	if took < testTimings.Duration || took > testTimings.Duration+300*time.Millisecond {
		t.Errorf("node-b took over %v after the last renewal, want just over the lease duration %v", took, testTimings.Duration)
	}
	if h := mem.holder("openelb-layer2-pool"); h != "node-b" {
		t.Errorf("Lease holder %q, want node-b", h)
	}

	// Back online, node-a competes again and does not take the Lease.
	viewA.down.Store(false)
	time.Sleep(1500 * time.Millisecond)
	if l := a.leader(); l != "node-b" {
		t.Errorf("leader %q after node-a came back, want node-b", l)
	}
}

func TestLeaseName(t *testing.T) {
	if got := LeaseName("eip-layer2-pool"); got != "openelb-layer2-eip-layer2-pool" {
		t.Errorf("LeaseName = %q", got)
	}
	long := make([]byte, 253)
	for i := range long {
		long[i] = 'a'
	}
	a, b := LeaseName(string(long)), LeaseName(string(long[:252])+"b")
	if len(a) > 253 || len(b) > 253 || a == b {
		t.Errorf("long names: %q (%d) and %q (%d): want distinct, at most 253", a, len(a), b, len(b))
	}
}
