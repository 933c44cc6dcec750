package kube

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
)

// TestWaitForSync: the wait outlasts a kind that cannot be listed, names
// it with its error in the log, and ends once the informer syncs (the
// object fixed); only ctx ends it otherwise.
func TestWaitForSync(t *testing.T) {
	var peersSynced atomic.Bool
	waits := []informerSync{
		{typ: "*v1alpha2.Eip", synced: func() bool { return true }},
		{typ: "*v1alpha2.BgpPeer", synced: peersSynced.Load},
	}
	decode := errors.New("failed to list *v1alpha2.BgpPeer: json: cannot unmarshal number -1")
	lastErr := func(typ string) error {
		if typ == "*v1alpha2.BgpPeer" {
			return decode
		}
		return nil
	}

	kinds, err := pendingSync(waits, lastErr)
	if len(kinds) != 1 || kinds[0] != "v1alpha2.BgpPeer" || !errors.Is(err, decode) {
		t.Fatalf("pendingSync = %v, %v; want [v1alpha2.BgpPeer] and its error", kinds, err)
	}

	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx := klog.NewContext(t.Context(), logger)
	done := make(chan error, 1)
	go func() { done <- waitForSync(ctx, waits, lastErr, 20*time.Millisecond) }()
	logs := func() string { return logger.GetSink().(ktesting.Underlier).GetBuffer().String() }
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs(), "v1alpha2.BgpPeer: failed to list") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l := logs(); !strings.Contains(l, "Informer caches not synced") || !strings.Contains(l, `unsynced=["v1alpha2.BgpPeer"]`) ||
		!strings.Contains(l, "json: cannot unmarshal number -1") {
		t.Fatalf("the log does not name the kind not synced and why:\n%s", l)
	}
	select {
	case err := <-done:
		t.Fatalf("waitForSync returned %v while a kind was not synced", err)
	default:
	}
	peersSynced.Store(true)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waitForSync after the sync: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitForSync did not return once every kind synced")
	}

	// Never synced: ctx ends the wait, with the kinds named.
	peersSynced.Store(false)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := waitForSync(cctx, waits, lastErr, time.Hour); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "v1alpha2.BgpPeer") {
		t.Errorf("waitForSync with ctx ended: %v, want context.Canceled naming v1alpha2.BgpPeer", err)
	}
}
