package election

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/klog/v2"
)

// Leadership is told when one term of leadership starts and ends.
type Leadership interface {
	// Started is called when this node acquired the Lease; ctx ends with
	// the term.
	Started(ctx context.Context, term *Term)
	// Ended is called as soon as the term ends or would end: before the
	// Lease is released, and again when client-go says it ended. It must
	// stop answering before it returns.
	Ended(term *Term)
}

// Term is one run of client-go's elector: at most one leadership. Its
// identity tells a late callback of a finished term from the current one.
type Term struct {
	// n numbers the elector runs of a campaign; it also keeps Term from
	// being zero-sized, whose pointers need not be distinct.
	n int
}

// Candidate is this node competing for one Lease.
type Candidate struct {
	// Store reads and writes the Lease.
	Store Store
	// Namespace and Name of the Lease (Name: LeaseName of the pool).
	Namespace, Name string
	// Identity is the holder this node writes: its node name.
	Identity string
	Timings  LeaseTimings
	// Meta gives the labels, annotations and owner of the Lease when this
	// node creates it.
	Meta func() metav1.ObjectMeta
}

// Describe names the Lease as namespace/name, for logs.
func (c Candidate) Describe() string { return c.Namespace + "/" + c.Name }

// Campaign competes for the Lease of c until ctx ends, one client-go
// elector at a time: after a lost leadership it competes again. On ctx's
// end a leader releases the Lease (ReleaseOnCancel) so a candidate takes
// over at once; l.Ended has run before that release is written.
func Campaign(ctx context.Context, c Candidate, l Leadership) {
	lock := &leaseLock{
		store: c.Store, namespace: c.Namespace, name: c.Name, identity: c.Identity,
		renewEvery: c.Timings.RetryPeriod, meta: c.Meta,
	}
	campaign(ctx, lock, c.Timings, l)
}

func campaign(ctx context.Context, lock *leaseLock, t LeaseTimings, l Leadership) {
	logger := klog.FromContext(ctx).WithValues("lease", lock.Describe())
	ctx = klog.NewContext(ctx, logger)
	for n := 1; ctx.Err() == nil; n++ {
		tm := &Term{n: n}
		lock.reset()
		lock.beforeRelease = func() { l.Ended(tm) }
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            lock.Describe(),
			LeaseDuration:   t.Duration,
			RenewDeadline:   t.RenewDeadline,
			RetryPeriod:     electorTick,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) { l.Started(ctx, tm) },
				OnStoppedLeading: func() { l.Ended(tm) },
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
