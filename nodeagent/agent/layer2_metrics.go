package agent

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
)

var (
	metricL2Answered = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "answered_addresses",
		Help:           "Addresses of the pool this node answers ARP/NDP for (its share); absent when the node is not a candidate of the pool (interface missing, not selected, no address in use).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	metricL2Candidates = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "candidates",
		Help:           "Candidate nodes of the pool (this one included) as this node sees them; absent when it is not a candidate.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	metricL2Moves = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "address_moves_total",
		Help:           "Addresses of the pool this node started or stopped answering for.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	metricL2LeaseWrites = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "openelb", Subsystem: "layer2", Name: "lease_writes_total",
		Help:           "Successful writes of this node's layer-2 Lease (renewals, changes of its pools or views).",
		StabilityLevel: metrics.ALPHA,
	})
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
		legacyregistry.MustRegister(metricL2Answered, metricL2Candidates, metricL2Moves, metricL2LeaseWrites, metricL2Gratuitous, metricL2Replies, metricL2Conflicts, metricL2SendErrors)
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
