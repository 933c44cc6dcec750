package cloud

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

var (
	metricAllocations = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "openelb",
		Subsystem:      "ipam",
		Name:           "events_total",
		Help:           "Allocation outcomes by reason (IPAllocated, IPReleased, PoolExhausted, IPTaken...).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})

	// poolLabels: the Eip's name, its family (IPv4 or IPv6, spelt as
	// Service ipFamilies; a pool is of one family) and its protocol (bgp or
	// layer2), the last so an alert can find the layer-2 pools in use that
	// no speaker answers for (charts/openelb/files/alerts.yaml).
	poolLabels = []string{"pool", "family", "protocol"}

	// The pool gauges are named as the issue asks; addresses_total is a
	// gauge despite its suffix (a pool's size goes down as well as up).
	metricPoolTotal = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "pool", Name: "addresses_total",
		Help:           "Addresses the pool (a valid Eip) hands out: its ranges less skipped network/broadcast addresses, as Eip status.poolSize. Exported by the leading CCM only.",
		StabilityLevel: metrics.ALPHA,
	}, poolLabels)
	metricPoolInUse = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "openelb", Subsystem: "pool", Name: "addresses_in_use",
		Help:           "Addresses of the pool held by Services (a shared address counts once), as Eip status.usage. Exported by the leading CCM only.",
		StabilityLevel: metrics.ALPHA,
	}, poolLabels)

	registerOnce sync.Once
)

// RegisterMetrics registers the provider's metrics with component-base's
// legacy registry (served on the CCM's /metrics). Safe to call repeatedly.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(metricAllocations, metricPoolTotal, metricPoolInUse)
	})
}

// Pool metrics are set where the provider already computes each Eip's
// status (writeEipStatuses, at most every 250 ms and only after a change),
// never at scrape time: counting a pool's addresses walks the addresses
// held, so a collector doing it per scrape would cost O(pools × held
// addresses) on every scrape of a CCM with thousands of Services. A scrape
// reads len(pools) × 2 gauges. Only the leader runs the status loop, so
// a standby replica exports no pool series at all, and a leader that has
// not re-adopted the held addresses yet exports none rather than counts
// too low.

// poolCount is one pool's series: its label values after the name, and
// its values.
type poolCount struct {
	family, protocol string
	total, inUse     float64
}

// poolUsage collects the counts of one status pass, by pool name.
type poolUsage map[string]poolCount

// observe records pl's counts from the status just computed for it; an
// Eip that serves no allocation (invalid address, overlap, unsupported
// protocol, bad selector) is left out, so its series go.
func (u poolUsage) observe(pl *pool, st *v1alpha2.EipStatus) {
	if pl.problem != "" || len(pl.rng) == 0 {
		return
	}
	family := "IPv4"
	if pl.rng.Family() != ipam.IPv4 {
		family = "IPv6"
	}
	// Size saturates at 2^64-1 (an IPv6 /64 and larger): exact enough for
	// a ratio, and the status's int64 poolSize is clamped lower still.
	u[pl.eip.Name] = poolCount{family: family, protocol: string(pl.eip.EffectiveProtocol()),
		total: float64(pl.rng.Size()), inUse: float64(st.Usage)}
}

// published is what each pool's series carry now, so a pass can delete
// the series of pools gone (or turned invalid, or of another family or
// protocol) since the last one.
var published = struct {
	sync.Mutex
	labels map[string]poolCount
}{labels: map[string]poolCount{}}

// publish sets the gauges to u and deletes every series not in it. A pass
// covers every Eip of the provider's pool set, so anything missing from u
// no longer exists or no longer serves.
func (u poolUsage) publish() {
	published.Lock()
	defer published.Unlock()
	for name, old := range published.labels {
		if c, ok := u[name]; ok && c.family == old.family && c.protocol == old.protocol {
			continue
		}
		metricPoolTotal.DeleteLabelValues(name, old.family, old.protocol)
		metricPoolInUse.DeleteLabelValues(name, old.family, old.protocol)
		delete(published.labels, name)
	}
	for name, c := range u {
		metricPoolTotal.WithLabelValues(name, c.family, c.protocol).Set(c.total)
		metricPoolInUse.WithLabelValues(name, c.family, c.protocol).Set(c.inUse)
		published.labels[name] = c
	}
}
