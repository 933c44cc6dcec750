package election

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/resourceversion"

	"github.com/openelb/cloud-provider-openelb/nodeagent/spread"
)

// AnnotationPools is the annotation of a node's Lease that lists the
// layer-2 pools the node can answer for, each with the view it acts on
// (Membership, as JSON).
const AnnotationPools = "openelb.kubesphere.io/layer2-pools"

// PoolAck is one pool in a node's Lease: the node can answer on the pool's
// interface, and it answers only addresses it owns under View.
type PoolAck struct {
	// View is ViewHash of the candidates the node acts on.
	View string `json:"view"`
	// Preferred: the node matches the pool's preferred-node selector.
	Preferred bool `json:"preferred,omitempty"`
}

// Membership is what AnnotationPools holds: by pool.
type Membership map[string]PoolAck

// Encode is the annotation's value.
func (m Membership) Encode() string {
	if len(m) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(map[string]PoolAck(m)) // map keys come sorted
	return string(b)
}

// ParseMembership reads the annotation; an empty value lists no pool.
func ParseMembership(s string) (Membership, error) {
	if s == "" {
		return Membership{}, nil
	}
	var m Membership
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationPools, err)
	}
	return m, nil
}

// Candidate is a node that can answer for a pool.
type Candidate struct {
	Node      string
	Preferred bool
}

// View is the candidates of one pool as one node sees them: the live nodes
// whose Lease lists the pool. Every node computes owners from its view
// alone, so nodes with the same view agree on every address's owner.
type View struct {
	Pool       string
	Candidates []Candidate // sorted by node
	Hash       string
}

// NewView sorts the candidates and hashes them.
func NewView(pool string, cands []Candidate) View {
	cands = slices.Clone(cands)
	slices.SortFunc(cands, func(a, b Candidate) int { return strings.Compare(a.Node, b.Node) })
	cands = slices.CompactFunc(cands, func(a, b Candidate) bool { return a.Node == b.Node })
	h := fnv.New64a()
	for _, c := range cands {
		_, _ = h.Write([]byte(c.Node))
		if c.Preferred {
			_, _ = h.Write([]byte{1})
		}
		_, _ = h.Write([]byte{0})
	}
	return View{Pool: pool, Candidates: cands, Hash: strconv.FormatUint(h.Sum64(), 16)}
}

// Owner is the node that answers addr under the view, "" for none.
func (v View) Owner(addr netip.Addr) string {
	nodes := make([]string, len(v.Candidates))
	var preferred []string
	for i, c := range v.Candidates {
		nodes[i] = c.Node
		if c.Preferred {
			preferred = append(preferred, c.Node)
		}
	}
	return spread.Owner(v.Pool, addr, nodes, preferred)
}

// Has says whether node is a candidate of the view.
func (v View) Has(node string) bool {
	return slices.ContainsFunc(v.Candidates, func(c Candidate) bool { return c.Node == node })
}

// PeerAck is what a node's Lease says of one pool, as another node last
// saw it: the view it acts on, and the Lease's resourceVersion.
type PeerAck struct {
	View string
	RV   string
}

// Ready says whether self may start answering the addresses it owns under
// view: every other candidate has acknowledged the same view in a write
// of its Lease that came after switchRV, the resourceVersion of self's own
// first write of that view. It returns the candidates it still waits for.
//
// Why this keeps one answering node per address: a node acknowledges a
// view only once it answers nothing it does not own under it, and keeps
// answering an address only while every view it moves to leaves it the
// owner. For two nodes to answer one address, each would have started
// under a view the other acknowledged after the first one's switch; with
// resourceVersions ordering all Lease writes, one of the two switches must
// then come after itself. An acknowledgement from before self's switch
// (from an earlier time in the same view) is not enough, since its writer
// may have moved on since in a write self has not seen yet.
//
// It also waits until this node's watch has delivered its own switch
// (seenRV, the latest Lease resourceVersion it has seen, is not before
// switchRV): every Lease write that came before the switch has then been
// seen, so no node that listed the pool before the switch is missing from
// view. Two nodes joining a pool at once would otherwise each see only
// itself and both answer everything.
//
// Candidates missing from acks (not seen) and acknowledgements whose
// resourceVersion does not parse count as not acknowledged.
func Ready(self string, view View, switchRV, seenRV string, acks map[string]PeerAck) (bool, []string) {
	if switchRV == "" || (seenRV != switchRV && !After(seenRV, switchRV)) {
		return false, []string{self}
	}
	var waiting []string
	for _, c := range view.Candidates {
		if c.Node == self {
			continue
		}
		a, ok := acks[c.Node]
		if !ok || a.View != view.Hash || !After(a.RV, switchRV) {
			waiting = append(waiting, c.Node)
		}
	}
	return len(waiting) == 0, waiting
}

// After says whether resourceVersion a is later than b (both of Leases,
// the one resource they are comparable in); false when either is
// malformed.
func After(a, b string) bool {
	c, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && c > 0
}
