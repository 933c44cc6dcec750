package conformance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// TestSchema checks the generated CRD schemas on the real API server: 4-byte
// AS numbers are stored and read back exactly, every bounded numeric field
// refuses what lies outside its bounds naming the field, a Go client lists
// every kind after its extreme values were stored, and the OpenELB sample
// manifests apply unchanged.
func TestSchema(t *testing.T) {
	l := newLabWith(t, harness.Options{})

	t.Run("FourByteASNs", func(t *testing.T) { testFourByteASNs(t, l.in(t)) })
	t.Run("NumericBounds", func(t *testing.T) { testNumericBounds(t, l.in(t)) })
	t.Run("EipAddressRules", func(t *testing.T) { testEipAddressRules(t, l.in(t)) })
	t.Run("EipBGPAttributeRules", func(t *testing.T) { testEipBGPAttributeRules(t, l.in(t)) })
	t.Run("OpenELBSamples", func(t *testing.T) { testOpenELBSamples(t, l.in(t)) })
}

// fourByteManifest is written the way OpenELB's documentation writes a
// BgpConf and a BgpPeer, with private 4-byte AS numbers (RFC 6996).
const fourByteManifest = `apiVersion: network.kubesphere.io/v1alpha2
kind: BgpConf
metadata:
  name: default
spec:
  as: 4200000000
  asPerRack:
    leaf1: 4294967294
    leaf2: 4200000001
  listenPort: 17900
---
apiVersion: network.kubesphere.io/v1alpha2
kind: BgpPeer
metadata:
  name: leaf-4byte
spec:
  conf:
    peerAs: 4294967294
    localAs: 4200000000
    neighborAddress: 192.0.2.1
`

func testFourByteASNs(t *testing.T, l *lab) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "four-byte.yaml")
	if err := os.WriteFile(path, []byte(fourByteManifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.cp.Kubectl(ctx, "apply", "-f", path); err != nil {
		t.Fatalf("kubectl apply of 4-byte AS numbers: %v\n%s", err, out)
	}
	var conf v1alpha2.BgpConf
	if err := l.crd.Get(ctx, client.ObjectKey{Name: "default"}, &conf); err != nil {
		t.Fatalf("reading BgpConf default: %v", err)
	}
	if conf.Spec.As != 4200000000 || conf.Spec.AsPerRack["leaf1"] != 4294967294 || conf.Spec.AsPerRack["leaf2"] != 4200000001 {
		t.Errorf("BgpConf read back as=%d asPerRack=%v, want 4200000000 and leaf1=4294967294 leaf2=4200000001", conf.Spec.As, conf.Spec.AsPerRack)
	}
	var peer v1alpha2.BgpPeer
	if err := l.crd.Get(ctx, client.ObjectKey{Name: "leaf-4byte"}, &peer); err != nil {
		t.Fatalf("reading BgpPeer: %v", err)
	}
	if c := peer.Spec.Conf; c == nil || c.PeerAs != 4294967294 || c.LocalAs != 4200000000 {
		t.Errorf("BgpPeer read back conf=%+v, want peerAs 4294967294 localAs 4200000000", c)
	}

	// What the CCM and the speakers write from those numbers: a rack's
	// peers and a speaker's report.
	rack := &v1alpha2.LoadBalancerRack{Spec: v1alpha2.LoadBalancerRackSpec{Rack: "leaf1",
		Peers: []v1alpha2.PlanPeer{{Name: "leaf-4byte", Address: "192.0.2.1", AS: 4294967294}}}}
	rack.Name = "leaf1-4byte"
	if err := l.crd.Create(ctx, rack); err != nil {
		t.Fatalf("creating a rack with a 4-byte peer AS: %v", err)
	}
	sp := &v1alpha2.LoadBalancerSpeaker{Status: v1alpha2.LoadBalancerSpeakerStatus{AS: 4294967294}}
	sp.Name = "node-4byte"
	if err := l.crd.Create(ctx, sp); err != nil {
		t.Fatalf("creating a speaker report with a 4-byte AS: %v", err)
	}
	conf.Status.NodesConfStatus = map[string]v1alpha2.NodeConfStatus{"node-4byte": {RouterId: "192.0.2.9", As: 4294967294}}
	if err := l.crd.Status().Update(ctx, &conf); err != nil {
		t.Fatalf("writing a 4-byte AS into BgpConf status: %v", err)
	}
	peer.Status.NodesPeerStatus = map[string]v1alpha2.NodePeerStatus{"node-4byte": {PeerState: v1alpha2.PeerState{PeerAs: 4294967294, LocalAs: 4200000000}}}
	if err := l.crd.Status().Update(ctx, &peer); err != nil {
		t.Fatalf("writing 4-byte AS numbers into BgpPeer status: %v", err)
	}

	var rb v1alpha2.LoadBalancerRack
	var sb v1alpha2.LoadBalancerSpeaker
	var cb v1alpha2.BgpConf
	var pb v1alpha2.BgpPeer
	for _, get := range []struct {
		name string
		obj  client.Object
	}{{"leaf1-4byte", &rb}, {"node-4byte", &sb}, {"default", &cb}, {"leaf-4byte", &pb}} {
		if err := l.crd.Get(ctx, client.ObjectKey{Name: get.name}, get.obj); err != nil {
			t.Fatalf("reading %s back: %v", get.name, err)
		}
	}
	if len(rb.Spec.Peers) != 1 || rb.Spec.Peers[0].AS != 4294967294 {
		t.Errorf("rack peers read back %+v, want AS 4294967294", rb.Spec.Peers)
	}
	if sb.Status.AS != 4294967294 {
		t.Errorf("speaker report AS read back %d, want 4294967294", sb.Status.AS)
	}
	if got := cb.Status.NodesConfStatus["node-4byte"].As; got != 4294967294 {
		t.Errorf("BgpConf status AS read back %d, want 4294967294", got)
	}
	if got := pb.Status.NodesPeerStatus["node-4byte"].PeerState; got.PeerAs != 4294967294 || got.LocalAs != 4200000000 {
		t.Errorf("BgpPeer status read back peerAs=%d localAs=%d, want 4294967294 4200000000", got.PeerAs, got.LocalAs)
	}
}

// bound is one bounded numeric field: the API server must refuse min-1 and
// max+1 naming the field, and store min and max exactly.
type bound struct {
	kind string
	// path is the field as the API server names it: dots, [i] for list
	// items, a map key as a segment.
	path      string
	min       int64
	max       int64
	unbounded bool // no maximum (int64 fields): only min-1 is refused
}

const (
	maxUint32 = math.MaxUint32
	maxInt32  = math.MaxInt32
)

// bounds lists every bounded numeric field of every kind.
var bounds = []bound{
	{kind: "BgpConf", path: "spec.as", max: maxUint32},
	{kind: "BgpConf", path: "spec.asPerRack.rack1", max: maxUint32},
	{kind: "BgpConf", path: "spec.listenPort", max: 65535},
	{kind: "BgpConf", path: "spec.families[0]", max: maxUint32},
	{kind: "BgpConf", path: "spec.gracefulRestart.restartTime", max: 4095},
	{kind: "BgpConf", path: "spec.gracefulRestart.deferralTime", max: 65535},
	{kind: "BgpConf", path: "spec.gracefulRestart.staleRoutesTime", max: 1<<24 - 1},
	{kind: "BgpConf", path: "spec.gracefulRestart.peerRestartTime", max: 4095},
	{kind: "BgpConf", path: "status.nodesConfStatus.node1.as", max: maxUint32},

	{kind: "BgpPeer", path: "spec.conf.peerAs", max: maxUint32},
	{kind: "BgpPeer", path: "spec.conf.localAs", max: maxUint32},
	{kind: "BgpPeer", path: "spec.conf.peerType", max: 1},
	{kind: "BgpPeer", path: "spec.conf.sendCommunity", max: 3},
	{kind: "BgpPeer", path: "spec.conf.allowOwnAs", max: 255},
	{kind: "BgpPeer", path: "spec.transport.remotePort", max: 65535},
	{kind: "BgpPeer", path: "spec.transport.tcpMss", max: 65535},
	{kind: "BgpPeer", path: "spec.ebgpMultihop.multihopTtl", max: 255},
	{kind: "BgpPeer", path: "spec.afiSafis[0].addPaths.config.sendMax", max: 255},
	{kind: "BgpPeer", path: "spec.bfd.detectMultiplier", max: 255},
	{kind: "BgpPeer", path: "spec.bfd.desiredMinTxIntervalMs", max: maxUint32 / 1000},
	{kind: "BgpPeer", path: "spec.bfd.requiredMinRxIntervalMs", max: maxUint32 / 1000},
	{kind: "BgpPeer", path: "spec.gracefulRestart.restartTime", max: 4095},
	{kind: "BgpPeer", path: "spec.gracefulRestart.deferralTime", max: 65535},
	{kind: "BgpPeer", path: "spec.gracefulRestart.staleRoutesTime", max: 1<<24 - 1},
	{kind: "BgpPeer", path: "spec.gracefulRestart.peerRestartTime", max: 4095},
	{kind: "BgpPeer", path: "status.nodesPeerStatus.node1.peerState.peerAs", max: maxUint32},
	{kind: "BgpPeer", path: "status.nodesPeerStatus.node1.peerState.localAs", max: maxUint32},
	{kind: "BgpPeer", path: "status.nodesPeerStatus.node1.peerState.advertisedPaths", max: maxInt32},

	{kind: "Eip", path: "spec.priority", min: math.MinInt32, max: maxInt32},
	{kind: "Eip", path: "spec.bgp.localPref", max: maxUint32},
	{kind: "Eip", path: "spec.bgp.asPathPrepend", max: v1alpha2.MaxASPathPrepend},
	{kind: "Eip", path: "status.usage", unbounded: true},
	{kind: "Eip", path: "status.poolSize", unbounded: true},
	{kind: "Eip", path: "status.observedGeneration", unbounded: true},

	{kind: "IPClaim", path: "spec.owners[0].ports[0].port", min: 1, max: 65535},

	{kind: "LoadBalancerRack", path: "spec.peers[0].as", max: maxUint32},

	{kind: "LoadBalancerSpeaker", path: "status.as", max: maxUint32},
	{kind: "LoadBalancerSpeaker", path: "status.prefixes", max: maxInt32},
	{kind: "LoadBalancerSpeaker", path: "status.paths", max: maxInt32},
	{kind: "LoadBalancerSpeaker", path: "status.sessionsEstablished", max: maxInt32},
	{kind: "LoadBalancerSpeaker", path: "status.sessions[0].advertisedPaths", max: maxInt32},
	{kind: "LoadBalancerSpeaker", path: "status.layer2[0].addresses", max: maxInt32},
	{kind: "LoadBalancerSpeaker", path: "status.problems[0].serviceCount", max: maxInt32},
	{kind: "LoadBalancerSpeaker", path: "status.observedRackGeneration", unbounded: true},
}

// baseObject is a valid object of kind whose numeric fields are absent,
// with the list items and map entries the bounded paths go through.
func baseObject(kind, name string) *unstructured.Unstructured {
	var content map[string]any
	switch kind {
	case "BgpConf":
		content = map[string]any{
			"spec":   map[string]any{"as": int64(65000), "asPerRack": map[string]any{}, "families": []any{int64(65537)}, "gracefulRestart": map[string]any{"enabled": true}},
			"status": map[string]any{"nodesConfStatus": map[string]any{"node1": map[string]any{"routerId": "192.0.2.9"}}},
		}
	case "BgpPeer":
		content = map[string]any{
			"spec": map[string]any{
				"conf":            map[string]any{"peerAs": int64(65001), "neighborAddress": "192.0.2.1"},
				"transport":       map[string]any{},
				"ebgpMultihop":    map[string]any{"enabled": true},
				"afiSafis":        []any{map[string]any{"addPaths": map[string]any{"config": map[string]any{"receive": false}}}},
				"bfd":             map[string]any{"enabled": true},
				"gracefulRestart": map[string]any{"enabled": true},
			},
			"status": map[string]any{"nodesPeerStatus": map[string]any{"node1": map[string]any{"peerState": map[string]any{"sessionState": "idle"}}}},
		}
	case "Eip":
		content = map[string]any{"spec": map[string]any{"address": "192.0.2.10", "bgp": map[string]any{}}, "status": map[string]any{"ready": true}}
	case "IPClaim":
		content = map[string]any{"spec": map[string]any{
			"address": "192.0.2.20",
			"owners":  []any{map[string]any{"namespace": "default", "name": "svc", "uid": "uid-1", "ports": []any{map[string]any{"protocol": "TCP"}}}},
		}}
	case "LoadBalancerRack":
		content = map[string]any{"spec": map[string]any{"rack": "rack1", "peers": []any{map[string]any{"name": "leaf1"}}}}
	case "LoadBalancerSpeaker":
		content = map[string]any{"status": map[string]any{
			"sessions": []any{map[string]any{"peer": "leaf1", "state": "established"}},
			"layer2":   []any{map[string]any{"pool": "pool1"}},
			"problems": []any{map[string]any{"object": "BgpPeer/leaf1", "message": "m"}},
		}}
	default:
		panic("no base object for " + kind)
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetAPIVersion(v1alpha2.SchemeGroupVersion.String())
	u.SetKind(kind)
	u.SetName(name)
	return u
}

// statusSubresource lists the kinds whose status is written through
// /status (LoadBalancerSpeaker is all status, written as a whole).
var statusSubresource = map[string]bool{"BgpConf": true, "BgpPeer": true, "Eip": true, "LoadBalancerRack": true}

// setPath sets the integer at path, walking existing list items and
// creating maps on the way.
func setPath(obj map[string]any, path string, v int64) error {
	segs := strings.Split(path, ".")
	var cur any = obj
	for i, seg := range segs {
		key, idx := seg, -1
		if open := strings.IndexByte(seg, '['); open >= 0 {
			n, err := strconv.Atoi(strings.TrimSuffix(seg[open+1:], "]"))
			if err != nil {
				return fmt.Errorf("bad segment %q", seg)
			}
			key, idx = seg[:open], n
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: not an object at %q", path, seg)
		}
		last := i == len(segs)-1
		if idx < 0 {
			if last {
				m[key] = v
				return nil
			}
			if _, ok := m[key]; !ok {
				m[key] = map[string]any{}
			}
			cur = m[key]
			continue
		}
		list, ok := m[key].([]any)
		if !ok || idx >= len(list) {
			return fmt.Errorf("%s: no item %d of %q in the base object", path, idx, key)
		}
		if last {
			list[idx] = v
			return nil
		}
		cur = list[idx]
	}
	return nil
}

// getPath reads the integer at path.
func getPath(obj map[string]any, path string) (int64, bool) {
	var cur any = obj
	for _, seg := range strings.Split(path, ".") {
		key, idx := seg, -1
		if open := strings.IndexByte(seg, '['); open >= 0 {
			idx, _ = strconv.Atoi(strings.TrimSuffix(seg[open+1:], "]"))
			key = seg[:open]
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return 0, false
		}
		cur = m[key]
		if idx >= 0 {
			list, ok := cur.([]any)
			if !ok || idx >= len(list) {
				return 0, false
			}
			cur = list[idx]
		}
	}
	v, ok := cur.(int64)
	return v, ok
}

// write creates an object of b's kind with b's field set to v, through the
// status subresource when the field is status of a kind that has one.
func (b bound) write(ctx context.Context, c client.Client, name string, v int64) error {
	u := baseObject(b.kind, name)
	viaStatus := statusSubresource[b.kind] && strings.HasPrefix(b.path, "status.")
	if !viaStatus {
		if err := setPath(u.Object, b.path, v); err != nil {
			return err
		}
		return c.Create(ctx, u)
	}
	status := u.Object["status"]
	if err := c.Create(ctx, u); err != nil {
		return fmt.Errorf("creating the object before its status: %w", err)
	}
	u.Object["status"] = status
	if err := setPath(u.Object, b.path, v); err != nil {
		return err
	}
	return c.Status().Update(ctx, u)
}

// namesField reports whether err is the API server refusing the field at
// path.
func namesField(err error, path string) bool {
	var se *apierrors.StatusError
	if !apierrors.IsInvalid(err) || !errors.As(err, &se) || se.ErrStatus.Details == nil {
		return false
	}
	for _, c := range se.ErrStatus.Details.Causes {
		if c.Field == path {
			return true
		}
	}
	return false
}

func objectName(b bound, what string) string {
	return strings.ToLower(sanitize(b.kind + "-" + b.path + "-" + what))
}

func testNumericBounds(t *testing.T, l *lab) {
	ctx := context.Background()
	for _, b := range bounds {
		t.Run(b.kind+"/"+b.path, func(t *testing.T) {
			refused := []int64{b.min - 1}
			accepted := []int64{b.min}
			if !b.unbounded {
				refused = append(refused, b.max+1)
				accepted = append(accepted, b.max)
			}
			for i, v := range refused {
				err := b.write(ctx, l.crd, objectName(b, fmt.Sprintf("refused%d", i)), v)
				if err == nil {
					t.Errorf("%s=%d was accepted, want it refused", b.path, v)
				} else if !namesField(err, b.path) {
					t.Errorf("%s=%d: want the API server to refuse the field %s, got: %v", b.path, v, b.path, err)
				}
			}
			for i, v := range accepted {
				name := objectName(b, fmt.Sprintf("accepted%d", i))
				if err := b.write(ctx, l.crd, name, v); err != nil {
					t.Errorf("%s=%d was refused: %v", b.path, v, err)
					continue
				}
				u := baseObject(b.kind, name)
				if err := l.crd.Get(ctx, client.ObjectKey{Name: name}, u); err != nil {
					t.Fatalf("reading %s back: %v", name, err)
				}
				if got, ok := getPath(u.Object, b.path); !ok || got != v {
					t.Errorf("%s=%d read back as %d (present %v)", b.path, v, got, ok)
				}
			}
		})
	}
	// The defect the bounds prevent: a Go client could not list a kind
	// once one object held a number its type cannot hold. Every kind now
	// holds its extreme values, and lists.
	for _, list := range []client.ObjectList{
		&v1alpha2.BgpConfList{}, &v1alpha2.BgpPeerList{}, &v1alpha2.EipList{}, &v1alpha2.IPClaimList{},
		&v1alpha2.LoadBalancerRackList{}, &v1alpha2.LoadBalancerSpeakerList{},
	} {
		if err := l.crd.List(ctx, list); err != nil {
			t.Errorf("listing %T with a Go client: %v", list, err)
		}
	}
}

// testEipAddressRules spot-checks on the API server the spec.address rules
// that provider/ipam's FuzzEipAddressRule compares with ParseRange in
// process: the server must run them as that test does (and accept the
// rules' cost when the CRD is installed).
func testEipAddressRules(t *testing.T, l *lab) {
	ctx := context.Background()
	for i, c := range []struct {
		address string
		ok      bool
	}{
		{"192.168.0.91-192.168.0.100", true},
		{" 10.20.0.0 / 24 ", true},
		{"2001:db8::1 - 2001:db8::ff", true},
		{"::/81", true},
		{"10.20.1.9-10.20.1.1", false},
		{"2001:db8::10-2001:db8::1", false},
		{"10.20.2.1-2001:db8::1", false},
		{"::/80", false},
		{"::1-::1:0:0:0", false},
		{"fe80::1%eth0", false},
	} {
		u := baseObject("Eip", fmt.Sprintf("address-%d", i))
		if err := setString(u.Object, "spec", "address", c.address); err != nil {
			t.Fatal(err)
		}
		err := l.crd.Create(ctx, u)
		switch {
		case c.ok && err != nil:
			t.Errorf("spec.address %q refused: %v", c.address, err)
		case !c.ok && !namesField(err, "spec.address"):
			t.Errorf("spec.address %q: want it refused naming spec.address, got %v", c.address, err)
		}
	}
}

// testEipBGPAttributeRules: the schema accepts exactly the communities the
// speakers parse (v1alpha2.ParseCommunity, ParseLargeCommunity), naming
// the field it refuses.
func testEipBGPAttributeRules(t *testing.T, l *lab) {
	ctx := context.Background()
	for i, c := range []struct {
		field string
		value string
	}{
		{"communities", "65000:100"},
		{"communities", "0:0"},
		{"communities", "65535:65535"},
		{"communities", "no-export"},
		{"communities", "graceful-shutdown"},
		{"communities", "local-as"},
		{"communities", "65536:1"},
		{"communities", "1:65536"},
		{"communities", "65000"},
		{"communities", "No-Export"},
		{"communities", "65000:100:1"},
		{"largeCommunities", "65000:1:2"},
		{"largeCommunities", "4294967294:4294967295:4294967295"},
		{"largeCommunities", "4294967295:1:2"},
		{"largeCommunities", "4294967296:1:2"},
		{"largeCommunities", "65000:1"},
		{"largeCommunities", "no-export"},
	} {
		var parseErr error
		if c.field == "communities" {
			_, parseErr = v1alpha2.ParseCommunity(c.value)
			// The Go parser is lenient on case; the schema is not, so a
			// stored value is always in the documented spelling.
			if c.value == "No-Export" {
				parseErr = errors.New("capitals")
			}
		} else {
			_, parseErr = v1alpha2.ParseLargeCommunity(c.value)
		}
		u := baseObject("Eip", fmt.Sprintf("bgp-%d", i))
		u.Object["spec"].(map[string]any)["bgp"] = map[string]any{c.field: []any{c.value}}
		err := l.crd.Create(ctx, u)
		switch {
		case parseErr == nil && err != nil:
			t.Errorf("spec.bgp.%s [%q] refused: %v", c.field, c.value, err)
		case parseErr != nil && !namesField(err, "spec.bgp."+c.field):
			t.Errorf("spec.bgp.%s [%q] (speaker: %v): want it refused naming spec.bgp.%s, got %v", c.field, c.value, parseErr, c.field, err)
		}
	}
}

func setString(obj map[string]any, parent, key, v string) error {
	m, ok := obj[parent].(map[string]any)
	if !ok {
		return fmt.Errorf("no %s in the base object", parent)
	}
	m[key] = v
	return nil
}

// testOpenELBSamples applies, unchanged, the sample manifests of deploy/
// and the OpenELB-documentation manifests of testdata.
func testOpenELBSamples(t *testing.T, l *lab) {
	ctx := context.Background()
	deploy, err := l.cp.DeployDir()
	if err != nil {
		t.Fatal(err)
	}
	// The namespaces the samples' objects go to, as the install creates
	// them.
	if out, err := l.cp.Kubectl(ctx, "apply", "-f", filepath.Join(deploy, "namespace.yaml")); err != nil {
		t.Fatalf("kubectl apply -f deploy/namespace.yaml: %v\n%s", err, out)
	}
	files, err := filepath.Glob(filepath.Join(deploy, "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in deploy/samples (%v)", err)
	}
	files = append(files, filepath.Join("testdata", "openelb-eips.yaml"))
	for _, f := range files {
		if out, err := l.cp.Kubectl(ctx, "apply", "-f", f); err != nil {
			t.Errorf("kubectl apply -f %s: %v\n%s", f, err, out)
		}
	}
	var eips v1alpha2.EipList
	if err := l.crd.List(ctx, &eips); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range eips.Items {
		have[e.Name] = true
	}
	for _, want := range []string{"eip-sample-pool", "eip-layer2-pool", "eip-team-a", "eip-team-a-backup", "eip-gold", "eip-manual"} {
		if !have[want] {
			t.Errorf("Eip %s missing after applying the samples", want)
		}
	}
	var peers v1alpha2.BgpPeerList
	if err := l.crd.List(ctx, &peers); err != nil {
		t.Fatal(err)
	}
	if len(peers.Items) < 2 {
		t.Errorf("BgpPeers after applying the samples: %d, want leaf1 and leaf2", len(peers.Items))
	}
}
