package election

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestLeaseTimingsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    LeaseTimings
		ok   bool
	}{
		{"defaults", DefaultLeaseTimings, true},
		{"one second", LeaseTimings{Duration: time.Second, RenewDeadline: 600 * time.Millisecond, RetryPeriod: 200 * time.Millisecond}, true},
		{"fractional seconds", LeaseTimings{Duration: 2500 * time.Millisecond, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond}, false},
		{"below a second", LeaseTimings{Duration: 500 * time.Millisecond, RenewDeadline: 300 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}, false},
		{"deadline not below duration", LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond}, false},
		{"deadline within the margin of duration", LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 1990 * time.Millisecond, RetryPeriod: 500 * time.Millisecond}, false},
		{"retry not below deadline", LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 500 * time.Millisecond}, false},
		{"zero retry", LeaseTimings{Duration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.t.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v, want ok=%v", tc.t, err, tc.ok)
			}
		})
	}
}

func TestNodeLeaseName(t *testing.T) {
	if got := NodeLeaseName("worker-1"); got != "openelb-layer2-node-worker-1" {
		t.Errorf("NodeLeaseName(worker-1) = %q", got)
	}
	a, b := strings.Repeat("n", 250)+"a", strings.Repeat("n", 250)+"b"
	la, lb := NodeLeaseName(a), NodeLeaseName(b)
	if len(la) > 253 || len(lb) > 253 || la == lb || !strings.HasPrefix(la, NodeLeasePrefix) {
		t.Errorf("long names: %q (%d), %q (%d): want distinct, ≤ 253, prefixed", la, len(la), lb, len(lb))
	}
}

func TestMembershipRoundTrip(t *testing.T) {
	m := Membership{"b": {View: "2"}, "a": {View: "1", Preferred: true}}
	s := m.Encode()
	if s != `{"a":{"view":"1","preferred":true},"b":{"view":"2"}}` {
		t.Errorf("Encode = %s", s)
	}
	back, err := ParseMembership(s)
	if err != nil || len(back) != 2 || back["a"] != m["a"] || back["b"] != m["b"] {
		t.Errorf("ParseMembership(%s) = %v, %v", s, back, err)
	}
	if got, err := ParseMembership(""); err != nil || len(got) != 0 {
		t.Errorf("empty annotation: %v, %v", got, err)
	}
	if _, err := ParseMembership("{not json"); err == nil || !strings.Contains(err.Error(), AnnotationPools) {
		t.Errorf("bad annotation: error %v, want one naming the annotation", err)
	}
	if (Membership{}).Encode() != "{}" {
		t.Errorf("no pool: %q", Membership{}.Encode())
	}
}

// TestView: the same candidates in any order give the same view and
// owners; a preferred flag changes the view; owners spread; a node
// leaving moves only its own addresses; preferred candidates take every
// address while any is a candidate.
func TestView(t *testing.T) {
	abc := NewView("p", []Candidate{{Node: "c"}, {Node: "a"}, {Node: "b"}, {Node: "a"}})
	cba := NewView("p", []Candidate{{Node: "b"}, {Node: "c"}, {Node: "a"}})
	if abc.Hash != cba.Hash || len(abc.Candidates) != 3 {
		t.Fatalf("views of the same candidates differ: %+v vs %+v", abc, cba)
	}
	if pref := NewView("p", []Candidate{{Node: "a", Preferred: true}, {Node: "b"}, {Node: "c"}}); pref.Hash == abc.Hash {
		t.Errorf("a preferred flag does not change the view's hash")
	}
	if other := NewView("q", []Candidate{{Node: "a"}, {Node: "b"}, {Node: "c"}}); other.Hash != abc.Hash {
		t.Errorf("the hash depends on the pool name; it should only hash the candidates")
	}
	ab := NewView("p", []Candidate{{Node: "a"}, {Node: "b"}})
	count := map[string]int{}
	base := netip.MustParseAddr("10.0.0.0")
	addr := base
	for range 900 {
		addr = addr.Next()
		o := abc.Owner(addr)
		count[o]++
		if o != "c" && ab.Owner(addr) != o {
			t.Fatalf("%s moved from %s when c left", addr, o)
		}
		if !abc.Has(o) {
			t.Fatalf("owner %q is no candidate", o)
		}
	}
	for _, n := range []string{"a", "b", "c"} {
		if count[n] < 250 || count[n] > 350 {
			t.Errorf("node %s owns %d of 900 addresses, want about 300: %v", n, count[n], count)
		}
	}
	pref := NewView("p", []Candidate{{Node: "a"}, {Node: "b", Preferred: true}, {Node: "c", Preferred: true}})
	addr = base
	for range 100 {
		addr = addr.Next()
		if o := pref.Owner(addr); o == "a" {
			t.Fatalf("%s owned by a, which is not preferred", addr)
		}
	}
	if (View{Pool: "p"}).Owner(base) != "" {
		t.Errorf("an empty view has an owner")
	}
}

// TestReady: a node starts answering only once every other candidate
// acknowledged its view in a write after its own switch.
func TestReady(t *testing.T) {
	v := NewView("p", []Candidate{{Node: "a"}, {Node: "b"}, {Node: "c"}})
	old := NewView("p", []Candidate{{Node: "a"}, {Node: "b"}})
	for _, tc := range []struct {
		name     string
		switchRV string
		acks     map[string]PeerAck
		ready    bool
		waiting  string
	}{
		{"own view not written yet", "", map[string]PeerAck{"b": {v.Hash, "20"}, "c": {v.Hash, "21"}}, false, "a"},
		{"both acknowledged after the switch", "10", map[string]PeerAck{"b": {v.Hash, "20"}, "c": {v.Hash, "11"}}, true, ""},
		{"one acknowledged before the switch", "10", map[string]PeerAck{"b": {v.Hash, "9"}, "c": {v.Hash, "11"}}, false, "b"},
		{"the switch write itself is not an acknowledgement", "10", map[string]PeerAck{"b": {v.Hash, "10"}, "c": {v.Hash, "11"}}, false, "b"},
		{"one acts on another view", "10", map[string]PeerAck{"b": {old.Hash, "30"}, "c": {v.Hash, "11"}}, false, "b"},
		{"one never seen", "10", map[string]PeerAck{"b": {v.Hash, "30"}}, false, "c"},
		{"numeric, not lexical, order", "99", map[string]PeerAck{"b": {v.Hash, "100"}, "c": {v.Hash, "101"}}, true, ""},
		{"malformed resourceVersion", "10", map[string]PeerAck{"b": {v.Hash, "x"}, "c": {v.Hash, "11"}}, false, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ready, waiting := Ready("a", v, tc.switchRV, "1000", tc.acks)
			if ready != tc.ready || strings.Join(waiting, ",") != tc.waiting {
				t.Errorf("Ready = %v waiting %v, want %v waiting %q", ready, waiting, tc.ready, tc.waiting)
			}
		})
	}
	alone := NewView("p", []Candidate{{Node: "a"}})
	if ready, _ := Ready("a", alone, "5", "5", nil); !ready {
		t.Errorf("a sole candidate whose switch came back through the watch is not ready")
	}
	// Two nodes joining at once each see only themselves: neither may
	// answer before its watch delivered its own switch, and so the
	// other's membership written before it.
	if ready, waiting := Ready("a", alone, "5", "4", nil); ready || len(waiting) != 1 || waiting[0] != "a" {
		t.Errorf("a sole candidate is ready before its watch saw its switch (waiting %v)", waiting)
	}
}

// TestHandOverOrdering replays the interleaving that defeats a rule
// without the resourceVersion check. An address x is c's with a, b and c
// as candidates, and b's once c is gone. rv 10: b acknowledges {a,b,c}.
// c leaves; rv 14: b switches to {a,b} and, once a acknowledges it (rv
// 15), starts answering x. c comes back and switches to {a,b,c} at rv 16,
// but its cache still shows b's acknowledgement of {a,b,c} from rv 10.
// That acknowledgement predates c's switch, so c must wait for b to move
// to {a,b,c}, which b does only after it stopped answering x.
func TestHandOverOrdering(t *testing.T) {
	abc := NewView("p", []Candidate{{Node: "a"}, {Node: "b"}, {Node: "c"}})
	ab := NewView("p", []Candidate{{Node: "a"}, {Node: "b"}})
	var x netip.Addr
	for addr := netip.MustParseAddr("10.0.0.1"); !x.IsValid(); addr = addr.Next() {
		if abc.Owner(addr) == "c" && ab.Owner(addr) == "b" {
			x = addr
		}
	}
	if ready, _ := Ready("b", ab, "14", "20", map[string]PeerAck{"a": {ab.Hash, "12"}}); ready {
		t.Fatalf("b ready on a's acknowledgement older than its switch")
	}
	bReady, _ := Ready("b", ab, "14", "20", map[string]PeerAck{"a": {ab.Hash, "15"}})
	cReady, _ := Ready("c", abc, "16", "20", map[string]PeerAck{"a": {abc.Hash, "17"}, "b": {abc.Hash, "10"}})
	if bReady && cReady {
		t.Fatalf("both b and c start answering %s", x)
	}
	if !bReady || cReady {
		t.Errorf("b ready %v (want true), c ready %v on b's stale acknowledgement (want false)", bReady, cReady)
	}
	if ready, _ := Ready("c", abc, "16", "20", map[string]PeerAck{"a": {abc.Hash, "17"}, "b": {abc.Hash, "18"}}); !ready {
		t.Errorf("c not ready once b acknowledged its view after the switch")
	}
}
