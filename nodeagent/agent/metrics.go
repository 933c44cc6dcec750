package agent

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	metricSessionUp = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "bgp", Name: "session_up",
		Help:           "1 when the BGP session to the peer is established.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"peer"})
	metricAdvertised = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "bgp", Name: "advertised_paths",
		Help:           "Paths advertised to the peer.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"peer"})
	// A gauge fed from GoBGP's own counter (which restarts with the BGP
	// instance); named _total as it counts messages.
	metricUpdatesSent = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "bgp", Name: "updates_sent_total",
		Help:           "BGP UPDATE messages sent to the peer by the current BGP instance.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"peer"})
	metricApplies = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "bgp", Name: "applies_total",
		Help:           "Changes applied to the BGP speaker (new peers, paths or global settings), by result.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	registerOnce sync.Once
)

// RegisterMetrics registers the agent's metrics with component-base's
// legacy registry (served on /metrics). Safe to call repeatedly.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(metricSessionUp, metricAdvertised, metricUpdatesSent, metricApplies)
	})
}
