package v1alpha2

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestFieldSupport: every spec field of the three OpenELB kinds is either
// honoured or reported when set, and nothing else is in the tables.
func TestFieldSupport(t *testing.T) {
	for _, k := range []struct {
		kind  string
		spec  reflect.Type
		table map[string]string
	}{
		{"BgpConf", reflect.TypeFor[BgpConfSpec](), BgpConfFields},
		{"BgpPeer", reflect.TypeFor[BgpPeerSpec](), BgpPeerFields},
		{"Eip", reflect.TypeFor[EipSpec](), EipFields},
	} {
		paths := FieldPaths(k.spec, "spec")
		for _, p := range paths {
			if _, ok := k.table[p]; !ok {
				t.Errorf("%s %s is neither honoured nor reported: add it to the table", k.kind, p)
			}
		}
		for p := range k.table {
			if !slices.Contains(paths, p) {
				t.Errorf("%s table names %s, which is no field", k.kind, p)
			}
		}
	}
}

// TestUnsupportedFieldsReported: a spec with every field set reports
// exactly the unsupported ones, each with its reason.
func TestUnsupportedFieldsReported(t *testing.T) {
	peer := &BgpPeerSpec{
		Conf:            &PeerConf{PeerAs: 65001, NeighborAddress: "192.0.2.1", PeerGroup: "g", RouteFlapDamping: true, Vrf: "red", NeighborInterface: "eth0", AdminDown: true},
		Timers:          &Timers{Config: &TimersConfig{HoldTime: "9", MinimumAdvertisementInterval: "30"}},
		Transport:       &Transport{MtuDiscovery: true, PassiveMode: true},
		GracefulRestart: &GracefulRestart{Enabled: true, Mode: "helper"},
		AfiSafis:        []*AfiSafi{{AddPaths: &AddPaths{Config: &AddPathsConfig{Receive: true, SendMax: 8}}}},
	}
	got := UnsupportedFields(peer, BgpPeerFields)
	var paths []string
	for _, g := range got {
		p, why, _ := strings.Cut(g, " (")
		paths = append(paths, p)
		if why == "" {
			t.Errorf("%s reported without a reason", p)
		}
	}
	want := []string{"spec.afiSafis[].addPaths.config.receive", "spec.conf.neighborInterface", "spec.conf.peerGroup",
		"spec.conf.routeFlapDamping", "spec.conf.vrf", "spec.gracefulRestart.mode",
		"spec.timers.config.minimumAdvertisementInterval", "spec.transport.mtuDiscovery"}
	if !slices.Equal(paths, want) {
		t.Errorf("unsupported = %v, want %v", paths, want)
	}
	if got := UnsupportedFields(&BgpConfSpec{As: 65000, Policy: "cm", UseMultiplePaths: true}, BgpConfFields); len(got) != 1 {
		t.Errorf("BgpConf unsupported = %v, want useMultiplePaths (policy is honoured)", got)
	}
	if got := UnsupportedFields(&EipSpec{Address: "192.0.2.1", Priority: 3}, EipFields); len(got) != 0 {
		t.Errorf("Eip unsupported = %v, want none", got)
	}
}
