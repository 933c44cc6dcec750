package cloud

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	metricAllocations = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "openelb",
		Subsystem:      "ipam",
		Name:           "events_total",
		Help:           "Allocation outcomes by reason (IPAllocated, IPReleased, PoolExhausted, IPTaken...).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})

	registerOnce sync.Once
)

// RegisterMetrics registers the provider's metrics with component-base's
// legacy registry (served on the CCM's /metrics). Safe to call repeatedly.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(metricAllocations)
	})
}
