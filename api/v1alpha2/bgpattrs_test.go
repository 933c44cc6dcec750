package v1alpha2

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]uint32{
		"65000:100": 65000<<16 | 100, "0:0": 0, "65535:65535": 0xFFFFFFFF, " 1:2 ": 1<<16 | 2,
		"no-export": 0xFFFFFF01, "no-advertise": 0xFFFFFF02, "graceful-shutdown": 0xFFFF0000,
		"local-as": 0xFFFFFF03, "no-export-subconfed": 0xFFFFFF03, "blackhole": 0xFFFF029A, "no-peer": 0xFFFFFF04,
	} {
		got, err := ParseCommunity(in)
		if err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %#x, %v; want %#x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "65536:1", "1:65536", "65000", "a:b", "-1:2", "1:2:3", "no_export"} {
		if _, err := ParseCommunity(in); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", in)
		}
	}
}

func TestParseLargeCommunity(t *testing.T) {
	got, err := ParseLargeCommunity("65000:1:4294967295")
	if err != nil || got != [3]uint32{65000, 1, 4294967295} {
		t.Errorf("ParseLargeCommunity = %v, %v", got, err)
	}
	for _, in := range []string{"", "1:2", "1:2:3:4", "4294967296:1:1", "4294967295:1:1", "a:1:1"} {
		if _, err := ParseLargeCommunity(in); err == nil {
			t.Errorf("ParseLargeCommunity(%q) accepted", in)
		}
	}
}

func TestServiceBGPAttributes(t *testing.T) {
	lp := func(v int64) *int64 { return &v }
	pool := &BGPAttributes{Communities: []string{"65000:100"}, LargeCommunities: []string{"65000:1:1"}, LocalPref: lp(150), ASPathPrepend: 1, LinkBandwidthMbps: 1000}
	for _, c := range []struct {
		name   string
		pool   *BGPAttributes
		ann    map[string]string
		want   *BGPAttributes
		errsAt []string // annotations the errors name
	}{
		{name: "nothing", want: nil},
		{name: "pool only", pool: pool, want: pool},
		{name: "each annotation replaces the pool's value", pool: pool, ann: map[string]string{
			AnnotationBGPCommunities: "no-export, 65000:200", AnnotationBGPLargeCommunities: "1:2:3",
			AnnotationBGPLocalPref: "300", AnnotationBGPASPathPrepend: "3", AnnotationBGPLinkBandwidth: "25000",
		}, want: &BGPAttributes{Communities: []string{"no-export", "65000:200"}, LargeCommunities: []string{"1:2:3"}, LocalPref: lp(300), ASPathPrepend: 3, LinkBandwidthMbps: 25000}},
		{name: "empty values clear", pool: pool, ann: map[string]string{
			AnnotationBGPCommunities: "", AnnotationBGPLargeCommunities: " ", AnnotationBGPLocalPref: "", AnnotationBGPASPathPrepend: "",
			AnnotationBGPLinkBandwidth: "0",
		}, want: nil},
		{name: "bad values keep the pool's and are reported", pool: pool, ann: map[string]string{
			AnnotationBGPCommunities: "65000:100,bogus", AnnotationBGPLocalPref: "-1", AnnotationBGPASPathPrepend: "11",
			AnnotationBGPLinkBandwidth: "2000000",
		}, want: pool, errsAt: []string{AnnotationBGPCommunities, AnnotationBGPLocalPref, AnnotationBGPASPathPrepend, AnnotationBGPLinkBandwidth}},
		{name: "annotations without a pool", ann: map[string]string{AnnotationBGPASPathPrepend: "2"}, want: &BGPAttributes{ASPathPrepend: 2}},
		{name: "selectors", ann: map[string]string{AnnotationBGPPeerSelector: "tier=edge", AnnotationBGPNodeSelector: "zone in (a,b)"},
			want: &BGPAttributes{PeerSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}},
				NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}}}}}},
		{name: "a bad selector is reported", ann: map[string]string{AnnotationBGPNodeSelector: "zone in a"}, errsAt: []string{AnnotationBGPNodeSelector}},
		{name: "a stored pool value the speakers refuse is left out", pool: &BGPAttributes{Communities: []string{"65000:100", "70000:1"}, ASPathPrepend: 40, LinkBandwidthMbps: -5},
			want: &BGPAttributes{Communities: []string{"65000:100"}}, errsAt: []string{"pool.communities[1]", "pool.asPathPrepend", "pool.linkBandwidthMbps"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, errs := ServiceBGPAttributes(c.pool, c.ann)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
			if len(errs) != len(c.errsAt) {
				t.Fatalf("errors %v, want %d naming %v", errs, len(c.errsAt), c.errsAt)
			}
			for _, at := range c.errsAt {
				found := false
				for _, err := range errs {
					found = found || strings.Contains(err.Error(), at)
				}
				if !found {
					t.Errorf("no error names %s: %v", at, errs)
				}
			}
		})
	}
}

func TestParseASPathPrepend(t *testing.T) {
	for in, want := range map[string]struct {
		all   int32
		peers map[string]int32
	}{
		"":                 {},
		"2":                {all: 2},
		"1, leaf2=3":       {all: 1, peers: map[string]int32{"leaf2": 3}},
		"leaf1=0,leaf2=10": {peers: map[string]int32{"leaf1": 0, "leaf2": 10}},
	} {
		all, peers, err := ParseASPathPrepend(in)
		if err != nil || all != want.all || !reflect.DeepEqual(peers, want.peers) {
			t.Errorf("ParseASPathPrepend(%q) = %d, %v, %v; want %d, %v", in, all, peers, err, want.all, want.peers)
		}
	}
	for _, in := range []string{"11", "x", "leaf2=3,1", "=2", "leaf2=11", "leaf2=-1"} {
		if _, _, err := ParseASPathPrepend(in); err == nil {
			t.Errorf("ParseASPathPrepend(%q) accepted", in)
		}
	}
}

func TestAggregatePrefix(t *testing.T) {
	b := &EipBGP{AggregationLength: 24, AggregationLengthV6: 64}
	for addr, want := range map[string]string{"172.22.0.7": "172.22.0.0/24", "2001:db8::7": "2001:db8::/64", "::ffff:172.22.1.9": "172.22.1.0/24"} {
		got, ok := b.AggregatePrefix(netip.MustParseAddr(addr))
		if !ok || got.String() != want {
			t.Errorf("AggregatePrefix(%s) = %s, %v; want %s", addr, got, ok, want)
		}
	}
	for _, b := range []*EipBGP{nil, {}, {AggregationLength: 32, AggregationLengthV6: 128}, {AggregationLength: 40}} {
		if got, ok := b.AggregatePrefix(netip.MustParseAddr("172.22.0.7")); ok {
			t.Errorf("%+v aggregates to %s", b, got)
		}
	}
}
