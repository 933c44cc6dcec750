package agent

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
)

var (
	metricL2Leader = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "is_leader",
		Help:           "1 while this node holds the pool's Lease and answers ARP/NDP for its addresses, 0 while it competes for it; absent when it does not compete (interface missing, no address in use).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	metricL2Transitions = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "leader_transitions_total",
		Help:           "Times this node became, or stopped being, the answering node of the pool.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	metricL2Gratuitous = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "gratuitous_sent_total",
		Help:           "Gratuitous ARPs (ipv4) and unsolicited neighbor advertisements (ipv6) sent, on taking over an address or when its answered MAC changed.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"family"})
	metricL2Replies = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "replies_total",
		Help:           "ARP requests (ipv4) and neighbor solicitations (ipv6) answered.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"family"})
	metricL2Conflicts = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "arp_conflicts_total",
		Help:           "ARP packets in which another MAC claimed an address this node answers for (a second answerer on the segment).",
		StabilityLevel: metrics.ALPHA,
	})
	metricL2SendErrors = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "send_errors_total",
		Help:           "Replies and announcements the interface refused to send.",
		StabilityLevel: metrics.ALPHA,
	})
	registerL2Once sync.Once
)

func registerLayer2Metrics() {
	registerL2Once.Do(func() {
		legacyregistry.MustRegister(metricL2Leader, metricL2Transitions, metricL2Gratuitous, metricL2Replies, metricL2Conflicts, metricL2SendErrors)
	})
}

// statsLocked feeds the responders' counters to the metrics.
func (m *layer2Manager) statsLocked() {
	for _, is := range m.ifaces {
		cur := is.r.Stats()
		countStats(is.stats, cur)
		is.stats = cur
	}
}

// countStats adds what a responder counted since prev to the metrics.
func countStats(prev, cur layer2.Stats) {
	add := func(c interface{ Add(float64) }, a, b uint64) {
		if b > a {
			c.Add(float64(b - a))
		}
	}
	add(metricL2Gratuitous.WithLabelValues("ipv4"), prev.GratuitousARPsSent, cur.GratuitousARPsSent)
	add(metricL2Gratuitous.WithLabelValues("ipv6"), prev.UnsolicitedNAsSent, cur.UnsolicitedNAsSent)
	add(metricL2Replies.WithLabelValues("ipv4"), prev.ARPRequestsAnswered, cur.ARPRequestsAnswered)
	add(metricL2Replies.WithLabelValues("ipv6"), prev.NeighborSolicitationsAnswered, cur.NeighborSolicitationsAnswered)
	add(metricL2Conflicts, prev.ARPConflicts, cur.ARPConflicts)
	add(metricL2SendErrors, prev.SendErrors, cur.SendErrors)
}
