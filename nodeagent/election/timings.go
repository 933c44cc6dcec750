package election

import (
	"fmt"
	"time"
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
