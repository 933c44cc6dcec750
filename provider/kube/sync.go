package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// syncReportInterval is how often a Start still waiting for its caches logs
// which kinds it waits for, and why.
const syncReportInterval = 15 * time.Second

// watchErrors remembers the last list or watch error of each informer of
// the cache, by the Go type it lists ("*v1alpha2.BgpPeer", as the reflector
// describes it).
type watchErrors struct {
	mu     sync.Mutex
	byType map[string]error
}

func newWatchErrors() *watchErrors { return &watchErrors{byType: map[string]error{}} }

// handle is the cache's watch error handler: it records err, then logs it
// as client-go does by default.
func (w *watchErrors) handle(ctx context.Context, r *toolscache.Reflector, err error) {
	w.mu.Lock()
	w.byType[r.TypeDescription()] = err
	w.mu.Unlock()
	toolscache.DefaultWatchErrorHandler(ctx, r, err)
}

// last is the last error recorded for typ; nil if none. An error stays
// after the informer recovers: only the kinds not synced are asked.
func (w *watchErrors) last(typ string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byType[typ]
}

// informerSync is one informer Start waits for.
type informerSync struct {
	typ    string // the Go type it lists, "*v1alpha2.BgpPeer"
	synced func() bool
}

// pendingSync returns the kinds not synced yet ("v1alpha2.BgpPeer") and
// their last errors, joined (nil when none has failed: the lists are still
// running).
func pendingSync(waits []informerSync, lastErr func(typ string) error) ([]string, error) {
	var kinds []string
	var errs []error
	for _, w := range waits {
		if w.synced() {
			continue
		}
		kind := strings.TrimPrefix(w.typ, "*")
		kinds = append(kinds, kind)
		if err := lastErr(w.typ); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", kind, err))
		}
	}
	return kinds, errors.Join(errs...)
}

// waitForSync waits until every informer synced, or ctx ends. Every
// interval it logs the kinds still pending with their last errors: the
// informers retry by themselves, so this only has to be patient and say
// what it waits for.
func waitForSync(ctx context.Context, waits []informerSync, lastErr func(typ string) error, interval time.Duration) error {
	logger := klog.FromContext(ctx)
	began := time.Now()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	report := time.NewTicker(interval)
	defer report.Stop()
	for {
		kinds, err := pendingSync(waits, lastErr)
		if len(kinds) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("informer caches of %s not synced: %w", strings.Join(kinds, ", "), ctx.Err())
		case <-poll.C:
		case <-report.C:
			waited := time.Since(began).Round(time.Second)
			if err != nil {
				logger.Error(err, "Informer caches not synced; LoadBalancer Services wait for them (the lists are retried: fixing the cause needs no restart)",
					"unsynced", kinds, "waited", waited)
			} else {
				logger.Info("Informer caches not synced yet; LoadBalancer Services wait for them", "unsynced", kinds, "waited", waited)
			}
		}
	}
}
