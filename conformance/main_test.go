package conformance

import (
	"os"
	"testing"

	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestMain routes controller-runtime's logger (used by the tests' clients
// and caches) to klog, so it does not print a goroutine dump warning that
// no logger was set into the test output.
func TestMain(m *testing.M) {
	ctrllog.SetLogger(klog.Background())
	os.Exit(m.Run())
}
