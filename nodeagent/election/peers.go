package election

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// LeaseInformer is the informer of the speakers' layer-2 Leases;
// client-go's and controller-runtime's informers are one.
type LeaseInformer interface {
	AddEventHandler(handler toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}

// Peer is another node's Lease as this node last saw it.
type Peer struct {
	Node  string
	RV    string
	Pools Membership
	// AckSince is, by pool, the resourceVersion at which the node's
	// acknowledgement of its current view was first seen: a switch.
	AckSince map[string]string
}

type peerState struct {
	Peer
	seen     time.Time // when its last write was seen
	dead     bool      // confirmed not renewed for Duration
	checking bool
}

// Peers follows the other nodes' layer-2 Leases from the agent's watch
// and says which are live.
//
// A node is live until Duration after this node saw its last write, and
// then only once a read from the API server (not the cache, which may
// lag) confirms that the Lease has not been written since (or is gone): a
// node's own renew deadline ends its answers before that (see OwnLease).
// A node whose Lease lists no pool (released) is not a candidate at once;
// a deleted Lease counts as not written since. The only API requests are
// those confirmations, one per expiry.
type Peers struct {
	self    string
	t       LeaseTimings
	client  LeaseClient
	changed func()
	log     klog.Logger

	mu    sync.Mutex
	peers map[string]*peerState // by node
	// seenRV is the latest resourceVersion of any layer-2 Lease the watch
	// delivered, this node's own included.
	seenRV string
	timer  *time.Timer
	ctx    context.Context
}

// NewPeers returns the tracker of the other nodes' Leases; changed is
// called (without locks held) when their pools, acknowledgements, writes
// or liveness changed.
func NewPeers(self string, t LeaseTimings, client LeaseClient, changed func()) *Peers {
	return &Peers{self: self, t: t, client: client, changed: changed, log: klog.Background(), peers: map[string]*peerState{}, ctx: context.Background()}
}

// Watch feeds the tracker from inf's events; call before it starts. ctx
// bounds the confirmation reads.
func (p *Peers) Watch(ctx context.Context, inf LeaseInformer) error {
	p.mu.Lock()
	p.ctx, p.log = ctx, klog.FromContext(ctx)
	p.mu.Unlock()
	_, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { p.observe(leaseOf(o), false) },
		UpdateFunc: func(_, o any) { p.observe(leaseOf(o), false) },
		DeleteFunc: func(o any) { p.observe(leaseOf(o), true) },
	})
	if err != nil {
		return fmt.Errorf("event handler for layer-2 Leases: %w", err)
	}
	return nil
}

func leaseOf(o any) *coordinationv1.Lease {
	if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	l, _ := o.(*coordinationv1.Lease)
	return l
}

// nodeOf is the node a layer-2 node Lease belongs to, "" when it is not
// one (another Lease, or a name that does not match its holder).
func nodeOf(l *coordinationv1.Lease) string {
	if l == nil {
		return ""
	}
	n := ptr.Deref(l.Spec.HolderIdentity, "")
	if n == "" || l.Name != NodeLeaseName(n) {
		return ""
	}
	return n
}

// observe records a write (or the deletion) of a Lease.
func (p *Peers) observe(l *coordinationv1.Lease, deleted bool) {
	node := nodeOf(l)
	if node == "" {
		return
	}
	if node == p.self {
		// Its own writes coming back: the watch has delivered every
		// write before them (see Ready).
		p.mu.Lock()
		newer := !deleted && p.newerLocked(l.ResourceVersion)
		if newer {
			p.seenRV = l.ResourceVersion
		}
		p.mu.Unlock()
		if newer {
			p.changed()
		}
		return
	}
	m, err := ParseMembership(l.Annotations[AnnotationPools])
	p.mu.Lock()
	if err != nil {
		p.log.Info("Ignoring the pools of a layer-2 Lease", "lease", l.Namespace+"/"+l.Name, "err", err)
		m = Membership{}
	}
	changed := p.recordLocked(node, l.ResourceVersion, m, deleted)
	if !deleted && p.newerLocked(l.ResourceVersion) {
		p.seenRV = l.ResourceVersion
	}
	p.scheduleLocked()
	p.mu.Unlock()
	if changed {
		p.changed()
	}
}

// recordLocked applies one seen state of node's Lease; it says whether
// that changes anything a hand-over looks at.
func (p *Peers) recordLocked(node, rv string, m Membership, deleted bool) bool {
	ps := p.peers[node]
	if deleted {
		// A deleted Lease (by hand, or with its Node) is not proof that
		// the node stopped answering: it may be about to create it again.
		// It stays a candidate until its expiry is confirmed, which finds
		// the Lease gone (or written again).
		return false
	}
	if ps == nil {
		ps = &peerState{Peer: Peer{Node: node, AckSince: map[string]string{}}}
		p.peers[node] = ps
	} else if rv == ps.RV || (ps.RV != "" && !After(rv, ps.RV)) {
		return false // the same write, or an older one than a confirmation read
	}
	for pool, a := range m {
		if old, ok := ps.Pools[pool]; !ok || old.View != a.View {
			ps.AckSince[pool] = rv
		}
	}
	maps.DeleteFunc(ps.AckSince, func(pool, _ string) bool { _, ok := m[pool]; return !ok })
	ps.RV, ps.Pools, ps.seen, ps.dead = rv, m, time.Now(), false
	return true
}

// Live returns the live nodes' Leases that list some pool, by node.
func (p *Peers) Live() map[string]Peer {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Peer, len(p.peers))
	for n, ps := range p.peers {
		if !ps.dead && len(ps.Pools) > 0 {
			out[n] = Peer{Node: n, RV: ps.RV, Pools: maps.Clone(ps.Pools), AckSince: maps.Clone(ps.AckSince)}
		}
	}
	return out
}

// newerLocked says whether rv is after every resourceVersion seen so far.
func (p *Peers) newerLocked(rv string) bool {
	return p.seenRV == "" || After(rv, p.seenRV)
}

// SeenRV is the latest resourceVersion of a layer-2 Lease the watch has
// delivered ("" before any).
func (p *Peers) SeenRV() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seenRV
}

// scheduleLocked arms the timer for the next expiry to check.
func (p *Peers) scheduleLocked() {
	var next time.Time
	for _, ps := range p.peers {
		if ps.dead || ps.checking || len(ps.Pools) == 0 {
			continue
		}
		if at := ps.seen.Add(p.t.Duration); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if next.IsZero() {
		return
	}
	armTimer(&p.timer, time.Until(next), p.expire)
}

// expire confirms, from the API server, the expiry of the Leases not seen
// written for Duration.
func (p *Peers) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for node, ps := range p.peers {
		if ps.dead || ps.checking || len(ps.Pools) == 0 || now.Sub(ps.seen) < p.t.Duration {
			continue
		}
		ps.checking = true
		go p.confirm(node, ps.RV)
	}
	p.scheduleLocked()
}

// confirm reads node's Lease from the API server: unchanged since rv, the
// node is gone; written since, it is live (the watch is late); unreadable,
// it stays live and is read again after RetryPeriod.
func (p *Peers) confirm(node, rv string) {
	ctx, cancel := context.WithTimeout(p.ctx, p.t.RetryPeriod)
	defer cancel()
	l, err := p.client.Get(ctx, NodeLeaseName(node), metav1.GetOptions{})
	p.mu.Lock()
	ps := p.peers[node]
	if ps == nil {
		p.mu.Unlock()
		return
	}
	ps.checking = false
	changed := false
	switch {
	case apierrors.IsNotFound(err):
		delete(p.peers, node)
		changed = true
		p.log.Info("A layer-2 node's Lease is gone; its addresses move", "node", node)
	case err != nil:
		// Keep it live: this node cannot tell, and taking its addresses
		// could make two nodes answer. Read again soon.
		ps.seen = time.Now().Add(p.t.RetryPeriod - p.t.Duration)
		p.log.V(2).Info("Confirming a layer-2 Lease's expiry failed; retrying", "node", node, "err", err)
	case l.ResourceVersion == rv && ps.RV == rv:
		ps.dead = true
		changed = true
		p.log.Info("A layer-2 node stopped renewing its Lease; its addresses move", "node", node, "after", p.t.Duration)
	default:
		m, perr := ParseMembership(l.Annotations[AnnotationPools])
		if perr != nil {
			m = Membership{}
		}
		changed = p.recordLocked(node, l.ResourceVersion, m, false)
	}
	p.scheduleLocked()
	p.mu.Unlock()
	if changed {
		p.changed()
	}
}
