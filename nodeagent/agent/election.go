package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	rl "k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// LeaseTimings tune the layer-2 leader election (one Lease per pool).
type LeaseTimings struct {
	// Duration is how long a Lease stays valid without renewal: after
	// the last renewal they saw, the other speakers wait this long before
	// taking over from a leader that died. A whole number of seconds (the
	// Lease stores seconds).
	Duration time.Duration
	// RenewDeadline is how long a leader keeps failing to renew before it
	// stops answering. Shorter than Duration, so a leader cut off from the
	// API server has stopped before anyone else may take over.
	RenewDeadline time.Duration
	// RetryPeriod is how often the leader renews, and how long a failed
	// write waits before it is retried. Candidates do not poll: they
	// watch the Lease and act the moment it is released or expires.
	RetryPeriod time.Duration
}

// DefaultLeaseTimings give an unplanned failover (a dead leader) of
// Duration plus a few tens of milliseconds, about 2 s, and a planned one
// (SIGTERM releases the Lease) of one API round trip plus one watch event.
var DefaultLeaseTimings = LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 500 * time.Millisecond}

const (
	// electorTick is how often client-go's election loop turns. Its
	// polls are free: Get is served from the watch cache and blocks until
	// the Lease changes or expires, and leaseLock paces the leader's
	// writes to RetryPeriod; the loop only has to be quick to notice.
	electorTick = 50 * time.Millisecond
	// expirySlack lets client-go's own clock (read just after Get
	// returns) agree that the Lease has expired.
	expirySlack = 20 * time.Millisecond
	// maxBlock bounds one blocking Get, so a missed notification costs at
	// most this much.
	maxBlock = time.Second
)

// Validate checks the constraints that make the election safe: a leader
// that cannot renew stops answering (RenewDeadline plus one loop turn)
// strictly before its Lease expires for the others.
func (t LeaseTimings) Validate() error {
	switch {
	case t.Duration < time.Second || t.Duration%time.Second != 0:
		return fmt.Errorf("lease duration %v: must be a whole number of seconds, at least 1s (a Lease stores seconds)", t.Duration)
	case t.RetryPeriod <= 0:
		return fmt.Errorf("retry period %v: must be positive", t.RetryPeriod)
	case t.RenewDeadline <= t.RetryPeriod:
		return fmt.Errorf("renew deadline %v: must exceed the retry period %v, or a leader never gets to retry a renewal", t.RenewDeadline, t.RetryPeriod)
	case t.RenewDeadline+electorTick >= t.Duration:
		return fmt.Errorf("renew deadline %v: must be below the lease duration %v minus %v, so that a leader that cannot renew stops answering before another node may take over",
			t.RenewDeadline, t.Duration, electorTick)
	}
	return nil
}

// leaseStore is how the election reads and writes Leases: reads from the
// agent's watch cache (free, and the watch says when a Lease changes),
// writes to the API server.
type leaseStore interface {
	// Get returns the cached Lease, or a NotFound error.
	Get(ctx context.Context, name string) (*coordinationv1.Lease, error)
	// Changed returns a channel closed at the next change of the Lease.
	// Take it before Get so a change in between is not missed.
	Changed(name string) <-chan struct{}
	Create(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
	Update(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
}

// leaseLock is client-go's resource lock for one Lease, built so that
// client-go's elector reacts to Lease changes instead of polling the API
// server, and does not let go of a Lease before the node stops answering:
//
//   - Get answers from the watch cache. When another node holds the Lease
//     and it has not changed since the elector last saw it, Get blocks
//     until it changes (a renewal, a release) or until the elector would
//     consider it expired, so a candidate sees a release within one watch
//     event and an expiry within expirySlack.
//   - Update paces renewals to one per RetryPeriod (the elector loop turns
//     every electorTick) and spaces retries of failed writes.
//   - Update releasing the Lease (empty holder) first calls beforeRelease,
//     which stops answering: client-go releases before it tells its
//     callbacks that leadership ended.
//
// Its raw record (what the elector compares to notice a change) is the
// Lease spec with microsecond times: client-go's own record has whole
// seconds, so two renewals within one second look identical and a
// candidate would date the Lease up to a second too early.
type leaseLock struct {
	store         leaseStore
	namespace     string
	name          string
	identity      string
	renewEvery    time.Duration
	meta          func() metav1.ObjectMeta // labels and owner of a new Lease
	beforeRelease func()

	mu        sync.Mutex
	lease     *coordinationv1.Lease // last read or written
	lastRaw   []byte                // last raw record returned by Get
	lastRawAt time.Time
	lastTry   time.Time
	lastOK    time.Time
	failed    bool // the last write failed
}

var _ rl.Interface = (*leaseLock)(nil)

// reset forgets what the previous elector saw; each elector starts blind.
func (l *leaseLock) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastRaw, l.lastRawAt = nil, time.Time{}
}

func (l *leaseLock) Identity() string { return l.identity }

func (l *leaseLock) Describe() string { return l.namespace + "/" + l.name }

// RecordEvent is a no-op: metrics and the LoadBalancerSpeakers report
// leadership.
func (l *leaseLock) RecordEvent(string) {}

func (l *leaseLock) Get(ctx context.Context) (*rl.LeaderElectionRecord, []byte, error) {
	for {
		changed := l.store.Changed(l.name)
		lease, err := l.store.Get(ctx, l.name)
		if err != nil {
			return nil, nil, err
		}
		rec := rl.LeaseSpecToLeaderElectionRecord(&lease.Spec)
		raw, err := json.Marshal(lease.Spec)
		if err != nil {
			return nil, nil, err
		}
		now := time.Now()
		l.mu.Lock()
		fresh := !bytes.Equal(raw, l.lastRaw)
		if fresh {
			l.lastRaw, l.lastRawAt = raw, now
		}
		expires := l.lastRawAt.Add(time.Duration(rec.LeaseDurationSeconds)*time.Second + expirySlack)
		done := fresh || rec.HolderIdentity == "" || rec.HolderIdentity == l.identity || !now.Before(expires) || ctx.Err() != nil
		if done {
			l.lease = lease.DeepCopy()
		}
		l.mu.Unlock()
		if done {
			return rec, raw, nil
		}
		t := time.NewTimer(min(expires.Sub(now), maxBlock))
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

func (l *leaseLock) Create(ctx context.Context, rec rl.LeaderElectionRecord) error {
	if err := l.pace(ctx, false); err != nil {
		return err
	}
	lease := &coordinationv1.Lease{ObjectMeta: l.meta(), Spec: rl.LeaderElectionRecordToLeaseSpec(&rec)}
	lease.Name, lease.Namespace = l.name, l.namespace
	created, err := l.store.Create(ctx, lease)
	l.wrote(created, err)
	return err
}

func (l *leaseLock) Update(ctx context.Context, rec rl.LeaderElectionRecord) error {
	l.mu.Lock()
	cur := l.lease
	l.mu.Unlock()
	if cur == nil {
		return errors.New("lease not read yet")
	}
	renewal := rec.HolderIdentity == l.identity && cur.Spec.HolderIdentity != nil && *cur.Spec.HolderIdentity == l.identity
	if rec.HolderIdentity == "" && l.beforeRelease != nil {
		l.beforeRelease()
	} else if err := l.pace(ctx, renewal); err != nil {
		return err
	}
	if renewal {
		// The elector stamped the time before pacing made it wait.
		rec.RenewTime = metav1.Now()
	}
	lease := cur.DeepCopy()
	lease.Spec = rl.LeaderElectionRecordToLeaseSpec(&rec)
	updated, err := l.store.Update(ctx, lease)
	l.wrote(updated, err)
	return err
}

// pace waits until the next write may go out: a renewal RetryPeriod after
// the last successful write, any write RetryPeriod after a failed one.
func (l *leaseLock) pace(ctx context.Context, renewal bool) error {
	l.mu.Lock()
	var at time.Time
	if renewal {
		at = l.lastOK.Add(l.renewEvery)
	}
	if l.failed {
		at = maxTime(at, l.lastTry.Add(l.renewEvery))
	}
	l.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *leaseLock) wrote(lease *coordinationv1.Lease, err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastTry, l.failed = now, err != nil
	if err == nil {
		l.lastOK, l.lease = now, lease
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// leadership is told when one term of leadership starts and ends.
type leadership interface {
	// started is called when this node acquired the Lease; ctx ends with
	// the term.
	started(ctx context.Context, term *term)
	// ended is called as soon as the term ends or would end: before the
	// Lease is released, and again when client-go says it ended. It must
	// stop answering before it returns.
	ended(term *term)
}

// term is one run of client-go's elector: at most one leadership.
type term struct {
	n int
}

// campaign competes for the Lease of lock until ctx ends, one client-go
// elector at a time: after a lost leadership it competes again. On ctx's
// end a leader releases the Lease (ReleaseOnCancel) so a candidate takes
// over at once.
func campaign(ctx context.Context, lock *leaseLock, t LeaseTimings, l leadership) {
	logger := klog.FromContext(ctx).WithValues("lease", lock.Describe())
	ctx = klog.NewContext(ctx, logger)
	for n := 1; ctx.Err() == nil; n++ {
		tm := &term{n: n}
		lock.reset()
		lock.beforeRelease = func() { l.ended(tm) }
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            lock.Describe(),
			LeaseDuration:   t.Duration,
			RenewDeadline:   t.RenewDeadline,
			RetryPeriod:     electorTick,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) { l.started(ctx, tm) },
				OnStoppedLeading: func() { l.ended(tm) },
			},
		})
		if err != nil {
			// Only invalid timings get here, and main validates them.
			logger.Error(err, "Cannot run the layer-2 leader election")
			return
		}
		le.Run(ctx)
		// Leadership lost: compete again after a pause, so a flapping API
		// server does not make the loop spin.
		select {
		case <-ctx.Done():
			return
		case <-time.After(t.RetryPeriod):
		}
	}
}
