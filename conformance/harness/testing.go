package harness

import (
	"context"
	"testing"
	"time"
)

// StartForTest starts a control plane for t (t.Fatal on error) and stops it
// in t.Cleanup. If the test failed, the tail of every process log is logged
// first.
func StartForTest(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Logf("control plane up in %v: %s (kubeconfig %s)", cp.StartupDuration.Round(time.Millisecond), cp.APIServerURL, cp.Kubeconfig)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane logs (dir %s):\n%s", cp.Dir, cp.logTails(60))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}
