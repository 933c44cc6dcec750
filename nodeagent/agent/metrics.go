package agent

import (
	"sync"
	"sync/atomic"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
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
	metricReceived = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "bgp", Name: "received_prefixes",
		Help:           "Routes the peer sent that the speaker holds (and discards), all families, while the session is established; a session is closed above openelb_bgp_prefix_limit of one family.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"peer"})
	metricPrefixLimit = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "bgp", Name: "prefix_limit",
		Help:           "Most prefixes of one address family the peer may send before its session is closed.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"peer"})
	metricPrefixLimitExceeded = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "bgp", Name: "prefix_limit_exceeded",
		Help:           "1 while the peer's session is held down because it sent more prefixes than its limit (it then receives none of the speaker's paths).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"peer"})
	metricApplies = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "bgp", Name: "applies_total",
		Help:           "Changes applied to the BGP speaker (new peers, paths or global settings), by result.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	metricDataPathHealthy = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "data_path", Name: "healthy",
		Help:           "Per probed node (the next hops of this speaker's rack, and itself): 1 while its kube-proxy health check passes, 0 while it fails after passing once (the node is left out of the next hops), absent until it first passed.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"node"})
	// metricReady repeats the /readyz verdict for Prometheus: `up` only
	// says that /metrics answered, and an alert on a speaker that runs but
	// does not do what the cluster asks (caches not synced, applies
	// failing) needs the speaker's own view. It is evaluated per scrape,
	// like a readiness probe: a few mutex acquisitions.
	metricReady = metrics.NewGaugeFunc(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "speaker", Name: "ready",
		Help:           "1 while the speaker's readiness check (/readyz) passes, 0 while it fails (or before it is served).",
		StabilityLevel: metrics.ALPHA,
	}, func() float64 {
		check := readyCheck.Load()
		return boolGauge(check != nil && (*check)() == nil)
	})
	// readyCheck is the check metricReady reports (ServeReadyMetric).
	readyCheck atomic.Pointer[func() error]

	registerOnce sync.Once
)

// ServeReadyMetric makes openelb_speaker_ready report check, the process's
// readiness check (Agent.Readyz); the last call wins.
func ServeReadyMetric(check func() error) { readyCheck.Store(&check) }

// RegisterMetrics registers the agent's metrics with component-base's
// legacy registry (served on /metrics). Safe to call repeatedly.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(metricSessionUp, metricAdvertised, metricUpdatesSent, metricReceived,
			metricPrefixLimit, metricPrefixLimitExceeded, metricApplies, metricDataPathHealthy)
		// A GaugeFunc is a plain Prometheus collector (as the kubelet
		// registers its own).
		legacyregistry.RawMustRegister(metricReady)
	})
}

// resetPeerMetrics forgets every peer's series, so a removed peer's go.
func resetPeerMetrics() {
	for _, m := range []*metrics.GaugeVec{metricSessionUp, metricAdvertised, metricUpdatesSent, metricReceived, metricPrefixLimit, metricPrefixLimitExceeded} {
		m.Reset()
	}
}

// setPeerMetrics sets the series of one peer from its state.
func setPeerMetrics(s bgp.PeerState) {
	metricSessionUp.WithLabelValues(s.Name).Set(boolGauge(s.State == "established"))
	metricAdvertised.WithLabelValues(s.Name).Set(float64(s.AdvertisedPaths))
	metricUpdatesSent.WithLabelValues(s.Name).Set(float64(s.UpdatesSent))
	metricReceived.WithLabelValues(s.Name).Set(float64(s.ReceivedPrefixes))
	metricPrefixLimit.WithLabelValues(s.Name).Set(float64(s.PrefixLimit))
	metricPrefixLimitExceeded.WithLabelValues(s.Name).Set(boolGauge(s.PrefixLimitExceeded))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
