package election

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rl "k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Store is how the election reads and writes Leases: reads from the
// agent's watch cache (free, and the watch says when a Lease changes),
// writes to the API server. CachedLeases is the agent's; tests use one in
// memory.
type Store interface {
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
	store         Store
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
