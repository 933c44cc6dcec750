package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// What the speaker's probes tolerate.
const (
	// readyFailureGrace is how long reconciles may keep failing (each is
	// retried a second later) before the speaker stops being ready: one
	// failed attempt is not worth a readiness flap.
	readyFailureGrace = 30 * time.Second
	// stuckAfter is how long one reconcile may run before the speaker is
	// taken as hung. An apply of tens of thousands of paths to GoBGP takes
	// seconds; one that does not return in minutes never will.
	stuckAfter = 3 * time.Minute
	// cacheReportInterval is how often a speaker still waiting for its
	// caches logs why.
	cacheReportInterval = 15 * time.Second
)

// health is what the speaker's /healthz (liveness) and /readyz (readiness)
// report: whether its caches synced, and how its reconciles (the desired
// state applied to GoBGP) went. The two answer different questions, as the
// kubelet acts on them differently:
//
//   - Liveness fails only when a restart is the cure: a reconcile has run
//     for longer than stuckAfter (the loop is hung, nothing is applied any
//     more). It never fails for the API server: an unreachable API server,
//     or an object that does not decode, keeps the caches from syncing, and
//     a new process would wait the same way; meanwhile the speaker keeps
//     announcing what it last applied. Nor for failing applies: a restart
//     would withdraw (without graceful restart) everything the node
//     announces and would not fix a refusal that comes from the
//     configuration; they are retried every second and logged.
//   - Readiness fails until the caches synced and the desired state was
//     applied once (BGP, and layer 2 reconciled), and while reconciles
//     have failed, or waited for the node's LoadBalancerRack, for longer
//     than readyFailureGrace: the speaker does not do what the cluster
//     asks. A rolling update of the DaemonSet waits for it.
type health struct {
	mu sync.Mutex
	// syncing is when the cache sync began (zero: not yet), synced
	// whether it ended.
	syncing time.Time
	synced  bool
	// watchErrs is the last list or watch error of each cached type.
	watchErrs map[string]timedError
	// running is when the reconcile in progress began (zero: none).
	running time.Time
	// failing is when the current run of failed reconciles began (zero:
	// the last one succeeded); lastErr is the last failure.
	failing time.Time
	lastErr error
}

// timedError is an error and when it happened.
type timedError struct {
	err error
	at  time.Time
}

func newHealth() *health { return &health{watchErrs: map[string]timedError{}} }

// watchError is the cache's watch error handler: it records why a type
// cannot be listed or watched, then logs it as client-go does by default.
func (h *health) watchError(ctx context.Context, r *toolscache.Reflector, err error) {
	h.mu.Lock()
	h.watchErrs[strings.TrimPrefix(r.TypeDescription(), "*")] = timedError{err: err, at: time.Now()}
	h.mu.Unlock()
	toolscache.DefaultWatchErrorHandler(ctx, r, err)
}

// syncStarted and syncEnded bracket the cache sync.
func (h *health) syncStarted(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.syncing = now
}

func (h *health) syncEnded() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.synced = true
}

// reconcileStarted and reconcileEnded bracket a reconcile; err is its
// outcome (non-nil also when it only waited and applied nothing).
func (h *health) reconcileStarted(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running = now
}

func (h *health) reconcileEnded(now time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running = time.Time{}
	h.lastErr = err
	switch {
	case err == nil:
		h.failing = time.Time{}
	case h.failing.IsZero():
		h.failing = now
	}
}

// cacheErrorsLocked joins the recorded list and watch errors, by type,
// with their age at now.
func (h *health) cacheErrorsLocked(now time.Time) error {
	var errs []error
	for _, t := range slices.Sorted(maps.Keys(h.watchErrs)) {
		e := h.watchErrs[t]
		errs = append(errs, fmt.Errorf("%s (%s ago): %w", t, now.Sub(e.at).Round(time.Second), e.err))
	}
	return errors.Join(errs...)
}

// liveness is the /healthz verdict at now (see health).
func (h *health) liveness(now time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.running.IsZero() && now.Sub(h.running) > stuckAfter {
		return fmt.Errorf("a reconcile has been running for %s (more than %s): the agent is hung", now.Sub(h.running).Round(time.Second), stuckAfter)
	}
	return nil
}

// readiness is the /readyz verdict at now (see health): applied tells
// whether the desired BGP state was applied at least once, layer2 whether
// layer 2 reconciled at least once.
func (h *health) readiness(now time.Time, applied, layer2 bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.syncing.IsZero():
		return errors.New("not started")
	case !h.synced:
		msg := fmt.Sprintf("caches not synced after %s", now.Sub(h.syncing).Round(time.Second))
		if err := h.cacheErrorsLocked(now); err != nil {
			return fmt.Errorf("%s; last list/watch errors:\n%w", msg, err)
		}
		return errors.New(msg)
	case !applied:
		if h.lastErr != nil {
			return fmt.Errorf("desired state not applied yet: %w", h.lastErr)
		}
		return errors.New("desired state not applied yet")
	case !h.failing.IsZero() && now.Sub(h.failing) > readyFailureGrace:
		return fmt.Errorf("reconciles failing for %s: %w", now.Sub(h.failing).Round(time.Second), h.lastErr)
	case !layer2:
		return errors.New("layer 2 not reconciled yet")
	}
	return nil
}

// Healthz is the liveness check of /healthz: it fails only when the agent
// is hung (see health).
func (a *Agent) Healthz() error { return a.health.liveness(time.Now()) }

// Readyz is the readiness check of /readyz: it fails until the caches
// synced and the desired state was applied, and while applying it keeps
// failing (see health).
func (a *Agent) Readyz() error {
	a.mu.Lock()
	applied := a.applied
	a.mu.Unlock()
	_, _, layer2 := a.l2.report()
	return a.health.readiness(time.Now(), applied, layer2)
}

// waitForCaches waits until the caches synced, or ctx ends. A type that
// cannot be listed (API server unreachable, an object that does not
// decode) is retried by its informer; every cacheReportInterval the log
// says which types failed and why, so fixing the cause lets the agent
// proceed without a restart.
func (a *Agent) waitForCaches(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	began := time.Now()
	a.health.syncStarted(began)
	done := make(chan bool, 1)
	go func() { done <- a.cache.WaitForCacheSync(ctx) }()
	tick := time.NewTicker(cacheReportInterval)
	defer tick.Stop()
	for {
		select {
		case ok := <-done:
			if !ok {
				return fmt.Errorf("caches did not sync: %w", ctx.Err())
			}
			a.health.syncEnded()
			return nil
		case now := <-tick.C:
			a.health.mu.Lock()
			err := a.health.cacheErrorsLocked(now)
			a.health.mu.Unlock()
			waited := now.Sub(began).Round(time.Second)
			if err != nil {
				logger.Error(err, "Caches not synced; nothing is applied until they are (lists are retried: fixing the cause needs no restart)", "waited", waited)
			} else {
				logger.Info("Caches not synced yet; nothing is applied until they are", "waited", waited)
			}
		}
	}
}

// trackedReconcile is reconcile with its outcome recorded for the probes.
// A reconcile that only waited for the node's rack object counts as
// failed: it applied nothing.
func (a *Agent) trackedReconcile(ctx context.Context) error {
	a.health.reconcileStarted(time.Now())
	err := a.reconcile(ctx)
	outcome := err
	if outcome == nil {
		if rack := a.racks.pending(); rack != "" {
			outcome = fmt.Errorf("waiting for LoadBalancerRack %s to be listed", rack)
		}
	}
	a.health.reconcileEnded(time.Now(), outcome)
	return err
}

// pending names the rack object the watch follows but has not listed yet;
// "" when there is none.
func (w *rackWatch) pending() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctrl != nil && !w.ctrl.HasSynced() {
		return w.name
	}
	return ""
}
