package election

import (
	"fmt"
	"time"
)

// LeaseTimings tune the nodes' layer-2 Leases.
type LeaseTimings struct {
	// Duration is how long a Lease stays valid without renewal: after
	// the last renewal they saw, the other speakers wait this long before
	// taking over the addresses of a node that died. A whole number of
	// seconds (the Lease stores seconds).
	Duration time.Duration
	// RenewDeadline is how long after sending its last successful
	// renewal a node keeps answering. Shorter than Duration, so a node
	// cut off from the API server has stopped before anyone else may take
	// over.
	RenewDeadline time.Duration
	// RetryPeriod is how often a node renews, and how long a failed
	// write waits before it is retried. Nobody polls: the nodes watch
	// each other's Leases.
	RetryPeriod time.Duration
}

// DefaultLeaseTimings give an unplanned failover (a dead node) of
// Duration plus a few round trips, about 2 s, and a planned one (SIGTERM
// releases the node's pools) of a few round trips.
var DefaultLeaseTimings = LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 500 * time.Millisecond}

// expiryMargin is the least time between a node's own deadline and the
// others' expiry: timers fire late by a few milliseconds on a busy node.
const expiryMargin = 50 * time.Millisecond

// Validate checks the constraints that make the hand-overs safe: a node
// that cannot renew stops answering (RenewDeadline plus a margin) strictly
// before its Lease expires for the others.
func (t LeaseTimings) Validate() error {
	switch {
	case t.Duration < time.Second || t.Duration%time.Second != 0:
		return fmt.Errorf("lease duration %v: must be a whole number of seconds, at least 1s (a Lease stores seconds)", t.Duration)
	case t.RetryPeriod <= 0:
		return fmt.Errorf("retry period %v: must be positive", t.RetryPeriod)
	case t.RenewDeadline <= t.RetryPeriod:
		return fmt.Errorf("renew deadline %v: must exceed the retry period %v, or a node never gets to retry a renewal", t.RenewDeadline, t.RetryPeriod)
	case t.RenewDeadline+expiryMargin >= t.Duration:
		return fmt.Errorf("renew deadline %v: must be below the lease duration %v minus %v, so that a node that cannot renew stops answering before another node may take over",
			t.RenewDeadline, t.Duration, expiryMargin)
	}
	return nil
}
