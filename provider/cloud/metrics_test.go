package cloud

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// TestPoolMetrics checks what one status pass publishes: a series pair per
// valid Eip with its family, none for an Eip that serves no allocation,
// and the series of pools gone or changed family deleted by the next pass.
func TestPoolMetrics(t *testing.T) {
	RegisterMetrics()
	names := []string{"openelb_pool_addresses_in_use", "openelb_pool_addresses_total"}
	eip := func(name, addr string, age time.Duration, tweak ...func(*v1alpha2.Eip)) *v1alpha2.Eip {
		e := &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0).Add(-age))},
			Spec: v1alpha2.EipSpec{Address: v1alpha2.AddressRange(addr)}}
		for _, f := range tweak {
			f(e)
		}
		return e
	}
	pass := func(eips []*v1alpha2.Eip, usage map[string]int) {
		u := poolUsage{}
		for _, pl := range buildPools(eips).byName {
			u.observe(pl, &v1alpha2.EipStatus{Usage: usage[pl.eip.Name]})
		}
		u.publish()
	}
	// Compared by hand: testutil's comparisons also lint, and the issue's
	// name openelb_pool_addresses_total breaks the rule that only counters
	// end in _total (see metricPoolTotal).
	check := func(want ...string) {
		t.Helper()
		mfs, err := legacyregistry.DefaultGatherer.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, mf := range mfs {
			if !slices.Contains(names, mf.GetName()) {
				continue
			}
			for _, m := range mf.GetMetric() {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+"="+l.GetValue())
				}
				got = append(got, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(ls, ","), m.GetGauge().GetValue()))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("pool series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	pass([]*v1alpha2.Eip{
		eip("v4", "10.0.0.0/24", 3*time.Hour, func(e *v1alpha2.Eip) { e.Spec.SkipNetworkAndBroadcast = true }),
		eip("v6", "fd00::/64", 2*time.Hour, func(e *v1alpha2.Eip) { e.Spec.Protocol = v1alpha2.ProtocolLayer2 }),
		eip("overlap", "10.0.0.5-10.0.0.9", time.Hour), // the newer Eip: the mistake
		eip("bad", "10.1.0.0/33", time.Hour),
		eip("vip", "10.2.0.1", time.Hour, func(e *v1alpha2.Eip) { e.Spec.Protocol = v1alpha2.ProtocolVIP }),
	}, map[string]int{"v4": 7, "v6": 1, "overlap": 2})
	check(
		"openelb_pool_addresses_in_use{family=IPv4,pool=v4,protocol=bgp} 7",
		"openelb_pool_addresses_in_use{family=IPv6,pool=v6,protocol=layer2} 1",
		"openelb_pool_addresses_total{family=IPv4,pool=v4,protocol=bgp} 254",
		"openelb_pool_addresses_total{family=IPv6,pool=v6,protocol=layer2} 1.8446744073709552e+19",
	)

	// v6 deleted, v4 turned IPv6, the overlap resolved: old series go.
	pass([]*v1alpha2.Eip{
		eip("v4", "fd01::1-fd01::a", 3*time.Hour),
		eip("overlap", "10.0.0.5-10.0.0.9", time.Hour),
	}, map[string]int{"v4": 10, "overlap": 2})
	check(
		"openelb_pool_addresses_in_use{family=IPv4,pool=overlap,protocol=bgp} 2",
		"openelb_pool_addresses_in_use{family=IPv6,pool=v4,protocol=bgp} 10",
		"openelb_pool_addresses_total{family=IPv4,pool=overlap,protocol=bgp} 5",
		"openelb_pool_addresses_total{family=IPv6,pool=v4,protocol=bgp} 10",
	)

	// The protocol changes: the bgp series go.
	pass([]*v1alpha2.Eip{
		eip("overlap", "10.0.0.5-10.0.0.9", time.Hour, func(e *v1alpha2.Eip) { e.Spec.Protocol = v1alpha2.ProtocolLayer2 }),
	}, map[string]int{"overlap": 3})
	check(
		"openelb_pool_addresses_in_use{family=IPv4,pool=overlap,protocol=layer2} 3",
		"openelb_pool_addresses_total{family=IPv4,pool=overlap,protocol=layer2} 5",
	)

	pass(nil, nil)
	check()
}
