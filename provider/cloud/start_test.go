package cloud

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// TestRetryStep: a start step is retried until it succeeds, never given
// up, and only ctx stops it.
func TestRetryStep(t *testing.T) {
	saved := startBackoff
	startBackoff = wait.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 1 << 30, Cap: 4 * time.Millisecond}
	t.Cleanup(func() { startBackoff = saved })

	calls := 0
	err := retryStep(t.Context(), "step", func() error {
		calls++
		if calls < 20 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 20 {
		t.Errorf("retryStep = %v after %d calls, want nil after 20", err, calls)
	}

	ctx, cancel := context.WithCancel(t.Context())
	calls = 0
	err = retryStep(ctx, "step", func() error {
		calls++
		if calls == 5 {
			cancel()
		}
		return errors.New("never")
	})
	if !errors.Is(err, context.Canceled) || calls != 5 {
		t.Errorf("retryStep = %v after %d calls, want context.Canceled after 5", err, calls)
	}
}
