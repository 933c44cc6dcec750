package conformance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// floodRoutes is how many routes leaf1 sends the speaker in
// TestPrefixLimitBoundsSpeakerMemory: five times the speaker's limit of
// bgp.DefaultMaxPrefixes per family, so that the RSS growth tells a bounded
// speaker from an unbounded one by a wide margin on either side.
const floodRoutes = 100000

// rssGrowthBoundKB bounds how much the speaker's RSS may grow while a
// router floods it. GoBGP holds at most bgp.DefaultMaxPrefixes routes of
// the family plus the UPDATE that crosses the limit (FRR packs some 800
// host routes in one), 650-850 bytes each as measured in GoBGP's
// Adj-RIB-In: about 17 MB more live heap, which the speaker's GOGC=25 lets
// run a quarter over. RSS is a noisy measure of that (when the collector
// runs, how much the runtime keeps from the OS): measured growth was 15-21
// MB in most runs and 32 MB once. The same 100,000 routes without the
// limit measured 59-60 MB (and never shrink back while the session lasts;
// a full Internet table would need about 700 MB). The bound sits between
// the two with 12 MB of margin either way.
const rssGrowthBoundKB = 44 * 1024

// procKB reads a "kB" field (VmRSS, VmHWM) of /proc/<pid>/status.
func procKB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("%s of %d: %q: %v", field, pid, line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// speakerMetric reads one series of master1's speaker metrics.
func (b *bgpLab) speakerMetric(node, series string) (float64, bool) {
	b.t.Helper()
	v, ok, err := netlab.NodeMetric(context.Background(), b.topo.Node(node).NS, seedlab.SpeakerHealthAddr, series)
	if err != nil {
		b.t.Fatalf("speaker metrics of %s: %v", node, err)
	}
	return v, ok
}

// TestPrefixLimitBoundsSpeakerMemory: a leaf without an export filter
// sends master1's speaker 100,000 routes (kernel routes redistributed by
// the real FRR leaf1). The speaker discards routes but GoBGP stores them
// before any policy runs; its per-family prefix limit closes the session
// once leaf1 is past bgp.DefaultMaxPrefixes, which bounds the speaker's
// memory (the bound is below). The overflow is reported (the
// LoadBalancerSpeaker's problems, the BgpPeer's status, a metric, the
// log), the speaker's announcements go on to its other router (leaf2,
// which gets a Service created after the flood) and, once leaf1 is given
// the export filter the README recommends, the speaker's retry brings
// leaf1's session back with that Service.
//
// GoBGP has no mode that keeps a session while discarding what is over
// the limit (see nodeagent/bgp/prefixlimit.go): while leaf1 floods it
// gets none of master1's paths, which the test checks too.
func TestPrefixLimitBoundsSpeakerMemory(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{})
	ctx := context.Background()
	b.configureSeed()
	// master1 also peers with leaf2 (through the spine, as leaf2 accepts
	// rack leaf1's subnet multihop): a router that does not flood it.
	other := rackPeer("leaf2-multihop", netlab.Leaf2Addr, netlab.Leaf2AS)
	other.Spec.EbgpMultihop = &v1alpha2.EbgpMultihop{Enabled: true, MultihopTtl: 4}
	if err := b.crd.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	speaker := b.startSpeaker("master1")
	b.waitSession("master1 at leaf1", b.topo.Leaf1, "192.168.0.3", true)
	b.waitSession("master1 at leaf2", b.topo.Leaf2, "192.168.0.3", true)
	if _, err := b.cs.CoreV1().Services("default").Create(ctx, newService("default", "nginx"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.waitAddress("default", "nginx")
	b.waitPaths("before the flood", b.topo.Leaf1, seedPrefix, "192.168.0.3")
	b.waitPaths("before the flood", b.topo.Leaf2, seedPrefix, "192.168.0.3")

	// The flood: host routes in leaf1's kernel, redistributed to its
	// speakers (not to the spine, which would pass them to leaf2).
	var batch strings.Builder
	for i := range floodRoutes {
		fmt.Fprintf(&batch, "route add blackhole 10.%d.%d.%d/32\n", 128+i>>16, i>>8&0xff, i&0xff)
	}
	batchFile := filepath.Join(b.net.Dir(), "flood.batch")
	if err := os.WriteFile(batchFile, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.net.IP(b.topo.Leaf1.NS, "-batch", batchFile); err != nil {
		t.Fatal(err)
	}
	pid := speaker.Pid()
	before := procKB(t, pid, "VmRSS")
	// Resets VmHWM to the current RSS: VmHWM is then the flood's peak.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	floodStart := time.Now()
	if err := b.topo.Leaf1.Configure(ctx,
		"ip prefix-list FLOOD seq 5 permit 10.128.0.0/9 le 32",
		"route-map NO-FLOOD deny 10", "match ip address prefix-list FLOOD", "exit",
		"route-map NO-FLOOD permit 20", "exit",
		fmt.Sprintf("router bgp %d", netlab.Leaf1AS), "address-family ipv4 unicast",
		"neighbor 10.0.1.1 route-map NO-FLOOD out", "redistribute kernel"); err != nil {
		t.Fatal(err)
	}

	// Held down and reported.
	limit := fmt.Sprint(bgp.DefaultMaxPrefixes)
	p := b.waitSpeakerProblem("master1", "BgpPeer/leaf1", "PrefixLimitExceeded", true)
	t.Logf("held down %v after the flood began: %s", time.Since(floodStart).Round(time.Millisecond), p.Message)
	if !strings.Contains(p.Message, "sent more than "+limit+" prefixes of one address family") {
		t.Errorf("problem message %q, want the limit", p.Message)
	}
	b.waitPeerStatus("leaf1", "master1", func(s v1alpha2.PeerState) bool {
		return s.SessionState != "established" && strings.Contains(s.Message, "sent more than "+limit+" prefixes")
	})
	if v, ok := b.speakerMetric("master1", `openelb_bgp_prefix_limit_exceeded{peer="leaf1"}`); !ok || v != 1 {
		t.Errorf("openelb_bgp_prefix_limit_exceeded{peer=leaf1} = %v (present %v), want 1", v, ok)
	}
	if log := speaker.Log(); !strings.Contains(log, "sent more prefixes of one family than its limit") || !strings.Contains(log, `peer="leaf1"`) {
		t.Errorf("the speaker's log does not report leaf1's overflow:\n%s", speaker.LogTail(20))
	}
	if out, err := b.topo.Leaf1.Vtysh(ctx, "show bgp neighbors 192.168.0.3"); err != nil || !strings.Contains(out, "Maximum Number of Prefixes Reached") {
		t.Errorf("leaf1 was not told why (Cease, maximum number of prefixes reached): %v\n%s", err, out)
	}
	b.waitPaths("leaf1 while it floods", b.topo.Leaf1, seedPrefix)

	// Memory: GoBGP held at most the limit (plus the UPDATE that crossed
	// it) of routes, then dropped them with the session.
	time.Sleep(2 * time.Second)
	peak := procKB(t, pid, "VmHWM")
	growth := peak - before
	t.Logf("speaker RSS %d kB before the flood, peak %d kB during it (+%d kB)", before, peak, growth)
	if growth > rssGrowthBoundKB {
		t.Errorf("the speaker's RSS grew by %d kB during the flood, more than the %d kB bound", growth, rssGrowthBoundKB)
	}

	// Announcing goes on: a Service created now reaches leaf2 over a
	// session that stayed up.
	if _, err := b.cs.CoreV1().Services("default").Create(ctx, newService("default", "after-flood"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	after := b.waitAddress("default", "after-flood")
	b.waitPaths("a Service after the flood, at the other router", b.topo.Leaf2, after+"/32", "192.168.0.3")

	// leaf1 gets an export filter towards the speakers: the retry (30 s
	// after the hold, then GoBGP's idle hold) brings its session back,
	// and the Service with it.
	if err := b.topo.Leaf1.Configure(ctx, "route-map OPENELB-SPEAKERS-OUT deny 10", "exit",
		fmt.Sprintf("router bgp %d", netlab.Leaf1AS), "address-family ipv4 unicast",
		"neighbor RACK route-map OPENELB-SPEAKERS-OUT out"); err != nil {
		t.Fatal(err)
	}
	var hops []string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		hops, _ = b.topo.Leaf1.NextHopsFrom(ctx, after+"/32", netlab.SpeakerRange)
		return len(hops) == 1 && hops[0] == "192.168.0.3", nil
	})
	if err != nil {
		t.Fatalf("leaf1 with an export filter: next hops %v for %s, want master1's after the speaker's retry", hops, after)
	}
	b.waitSpeakerProblem("master1", "BgpPeer/leaf1", "PrefixLimitExceeded", false)
	if v, _ := b.speakerMetric("master1", `openelb_bgp_prefix_limit_exceeded{peer="leaf1"}`); v != 0 {
		t.Errorf("openelb_bgp_prefix_limit_exceeded{peer=leaf1} = %v after the retry, want 0", v)
	}
	if v, ok := b.speakerMetric("master1", `openelb_bgp_received_prefixes{peer="leaf1"}`); !ok || v != 0 {
		t.Errorf("openelb_bgp_received_prefixes{peer=leaf1} = %v (present %v) behind the export filter, want 0", v, ok)
	}
}
