package bgp_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/agent"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// fuzzInput hands out the fields of a BgpConf and BgpPeers from fuzz
// bytes; past the end it hands out zeros.
type fuzzInput struct{ b []byte }

func (in *fuzzInput) byte() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}

func (in *fuzzInput) bool() bool { return in.byte()&1 == 1 }

// uint32 reads a selector byte, then 0, 1, 2 or 4 bytes: small and huge
// values are as easy to reach as each other.
func (in *fuzzInput) uint32() uint32 {
	n := []int{0, 1, 2, 4}[in.byte()%4]
	var buf [4]byte
	for i := range n {
		buf[4-n+i] = in.byte()
	}
	return binary.BigEndian.Uint32(buf[:])
}

func (in *fuzzInput) pick(options ...string) string { return options[int(in.byte())%len(options)] }

// Seed builders: the encodings fuzzInput decodes.
var (
	yes = []byte{1}
	no  = []byte{0}
)

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32([]byte{3}, v) }

func pick(i byte) []byte { return []byte{i} }

func seed(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// timerValues are timer strings of every kind the speaker may meet.
var timerValues = []string{"", "0", "1", "3", "30", "90", "65535", "65536", "4294967295", "4294967296", "-1", "1.5s", "90s", "1h", "2562047h", "x"}

// loopbackOnly keeps s's syntax (family, IPv4-mapped form, zone) but moves
// any address it parses to into loopback: the speaker under test dials its
// neighbors, and a fuzz test must send nothing beyond this host.
func loopbackOnly(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Unmap().IsLoopback() {
		return s
	}
	zone := ""
	if a.Zone() != "" {
		zone = "%" + a.Zone()
	}
	b := a.Unmap().As16()
	switch {
	case a.Is4():
		return netip.AddrFrom4([4]byte{127, b[13], b[14], b[15]}).String()
	case a.Is4In6():
		return "::ffff:" + netip.AddrFrom4([4]byte{127, b[13], b[14], b[15]}).String() + zone
	default:
		return "::1" + zone
	}
}

// fuzzPeer builds BgpPeer name from in; neighbor, timers and password are
// the fuzzer's strings for the first peer, picked from lists for the others.
func fuzzPeer(in *fuzzInput, name, neighbor, hold, keepalive, password string) *v1alpha2.BgpPeer {
	bp := &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}
	bp.Spec.Conf = &v1alpha2.PeerConf{
		PeerAs:          in.uint32(),
		LocalAs:         in.uint32(),
		NeighborAddress: loopbackOnly(neighbor),
		AuthPassword:    password,
	}
	if in.bool() {
		bp.Spec.EbgpMultihop = &v1alpha2.EbgpMultihop{Enabled: in.bool(), MultihopTtl: in.uint32()}
	}
	if in.bool() {
		bp.Spec.Timers = &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{
			HoldTime: hold, KeepaliveInterval: keepalive, ConnectRetry: in.pick(timerValues...),
		}}
	}
	if in.bool() {
		bp.Spec.Transport = &v1alpha2.Transport{RemotePort: in.uint32(), TcpMss: in.uint32()}
	}
	if in.bool() {
		bp.Spec.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: in.bool(), RestartTime: in.uint32()}
	}
	if in.bool() {
		bp.Spec.Bfd = &v1alpha2.Bfd{Enabled: in.bool(), DetectMultiplier: in.uint32(),
			DesiredMinTxIntervalMs: in.uint32(), RequiredMinRxIntervalMs: in.uint32()}
	}
	for range in.byte() % 3 {
		bp.Spec.AfiSafis = append(bp.Spec.AfiSafis, &v1alpha2.AfiSafi{AddPaths: &v1alpha2.AddPaths{
			Config: &v1alpha2.AddPathsConfig{Receive: in.bool(), SendMax: in.uint32()}}})
	}
	return bp
}

// FuzzBgpConfig turns fuzzed BgpConf and BgpPeer specs into the speaker's
// configuration with agent.Desired, the function the agent runs on every
// change, and applies it to a real GoBGP speaker. Whatever the numbers and
// strings: nothing panics; every BgpPeer is either a neighbor of the
// speaker or named in a problem (Desired's, or Apply's error, which the
// agent reports); and no neighbor is configured that was not asked for.
// GoBGP's own validation (StartBgp, AddPeer: newNeighborFromAPIStruct and
// oc.SetDefaultNeighborConfigValues) runs on everything Desired lets
// through. GoBGP narrows some numbers silently (a restart time to 16 bits,
// then 12 in the OPEN); what it holds is not visible through the Speaker
// interface, so such values must be refused before (bgp.Peer.Validate,
// Desired), and this target does not see them.
//
// Neighbor addresses are moved into loopback (loopbackOnly) and the
// listener is left closed (listenPort's range is still checked by Desired):
// the test must neither send beyond this host nor listen on every address.
func FuzzBgpConfig(f *testing.F) {
	// Seeds, in the order FuzzBgpConfig reads them: the BgpConf (as,
	// asPerRack, listenPort, gracefulRestart), then peer-0's numbers, then
	// how many more peers.
	valid := seed(u32(64512), no, u32(0), yes, yes, u32(120),
		u32(65001), u32(0), yes, yes, u32(2), yes, pick(5), yes, u32(1179), u32(1400),
		yes, yes, u32(0), yes, yes, u32(3), u32(300), u32(300), []byte{1}, yes, u32(8),
		[]byte{1}, pick(0), pick(5), pick(4), pick(1), u32(65002), u32(0), no, no, no, no, no, []byte{0})
	f.Add(valid, "192.0.2.1", "90", "30", "", "")
	f.Add(seed(u32(4200000000), yes, u32(4294967294), u32(0), no,
		u32(4294967294), u32(4200000000), no, yes, pick(2), no, no, no, []byte{0}, []byte{0}),
		"2001:db8::1", "65535", "", "pw", "10.0.0.1")
	// Values only objects stored before the CRD's bounds can hold.
	f.Add(seed(u32(65000), no, u32(0), yes, yes, u32(70000),
		u32(65001), u32(4294967295), yes, yes, u32(256), yes, pick(9), yes, u32(65536), u32(70000),
		yes, yes, u32(4096), yes, yes, u32(256), u32(4294967295), u32(4294968), []byte{2}, no, u32(256), yes, u32(0), []byte{0}),
		"192.0.2.1", "65536", "4294967296", strings.Repeat("p", 81), "")
	f.Add(seed(u32(65000), no, u32(0), no, u32(65001), u32(0), no, yes, pick(10), no, no, no, []byte{0}, []byte{2},
		pick(2), pick(3), pick(3), pick(0), u32(65001), u32(0), no, no, no, no, no, []byte{0},
		pick(0), pick(6), pick(1), pick(0), u32(65003), u32(0), no, no, no, no, no, []byte{0}),
		"::ffff:192.0.2.1", "2", "3", "", "")
	f.Add(seed(u32(65000), no, u32(179), no, u32(65001)), "fe80::1%lo", "1h", "0", "", "0.0.0.0")
	f.Add(seed(u32(0), yes, u32(0), u32(4294967295)), "not-an-ip", "", "", "", "::1")
	f.Fuzz(func(t *testing.T, data []byte, neighbor, hold, keepalive, password, routerID string) {
		in := &fuzzInput{b: data}
		conf := &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		conf.Spec.As = in.uint32()
		if in.bool() {
			conf.Spec.AsPerRack = map[string]v1alpha2.ASN{"rack1": v1alpha2.ASN(in.uint32())}
		}
		conf.Spec.RouterId = routerID
		conf.Spec.ListenPort = int32(in.uint32())
		if in.bool() {
			conf.Spec.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: in.bool(), RestartTime: in.uint32()}
		}
		peers := []*v1alpha2.BgpPeer{fuzzPeer(in, "peer-0", neighbor, hold, keepalive, password)}
		for i := range in.byte() % 3 {
			peers = append(peers, fuzzPeer(in, fmt.Sprintf("peer-%d", i+1),
				in.pick("127.0.0.2", "127.0.0.3", "::1", "192.0.2.1", "::ffff:127.0.0.2", "", "x"),
				in.pick(timerValues...), in.pick(timerValues...), in.pick("", "secret")))
		}
		node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{
			v1alpha2.LabelSpeaker: v1alpha2.LabelSpeakerValue, v1alpha2.LabelRack: "rack1"}}}
		node.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.5"}}

		st, problems := agent.Desired(node, conf, peers, nil, nil, nil)
		named := map[string]bool{}
		for _, p := range problems {
			named[p.Object] = true
		}
		if !st.Enabled {
			if !named["BgpConf/default"] {
				t.Fatalf("BGP is off without a BgpConf problem: %+v", problems)
			}
			return
		}
		wanted := map[string]bool{}
		for _, p := range st.Peers {
			wanted[p.Name] = true
		}
		for _, bp := range peers {
			if wanted[bp.Name] == named["BgpPeer/"+bp.Name] {
				t.Fatalf("BgpPeer %s: configured %v, named in a problem %v (want exactly one): %+v", bp.Name, wanted[bp.Name], named["BgpPeer/"+bp.Name], problems)
			}
		}

		g := st.Global
		g.ListenPort = 0
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		sp := bgp.NewGoBGP(logr.Discard())
		defer func() { _ = sp.Stop(ctx, false) }()
		err := sp.Apply(ctx, g, st.Peers, nil)
		states, serr := sp.States(ctx)
		if serr != nil {
			t.Fatalf("States: %v", serr)
		}
		mentions := func(name string) bool { return err != nil && strings.Contains(err.Error(), fmt.Sprintf("%q", name)) }
		// An error naming no peer with nothing configured: the instance
		// did not start, and that error reports every peer.
		instanceDown := err != nil && len(states) == 0 && !slices.ContainsFunc(st.Peers, func(p bgp.Peer) bool { return mentions(p.Name) })
		configured := map[string]bool{}
		for _, s := range states {
			configured[s.Name] = true
			if !wanted[s.Name] {
				t.Fatalf("GoBGP has neighbor %s (%q) nobody asked for", s.Address, s.Name)
			}
		}
		for _, p := range st.Peers {
			reported := instanceDown || mentions(p.Name)
			if configured[p.Name] == reported {
				t.Fatalf("peer %s (%+v): configured %v, reported %v (want exactly one); Apply: %v", p.Name, p, configured[p.Name], reported, err)
			}
		}
	})
}
