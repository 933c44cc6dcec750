package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// leaseWrite is one write of a node's layer-2 Lease, as the bench's watch
// saw it.
type leaseWrite struct {
	At   time.Time
	Node string
	RV   string
	// Pools is the annotation listing the node's pools and views.
	Pools string
	// Released: the Lease lists no pool (the speaker released it on
	// SIGTERM).
	Released bool
}

// leaseLog records the writes of the speakers' node Leases
// (election.NodeLeaseName), by node, from a watch: it splits a failover
// into the speaker's part (its last renewal, its release) and the other
// nodes' part (taking over).
type leaseLog struct {
	done chan struct{}

	mu     sync.Mutex
	writes map[string][]leaseWrite
}

// watchLeases starts recording the node Leases in namespace ns; stop it
// with close.
func watchLeases(cs kubernetes.Interface, ns string) *leaseLog {
	l := &leaseLog{done: make(chan struct{}), writes: map[string][]leaseWrite{}}
	see := func(o any) {
		lease, ok := o.(*coordinationv1.Lease)
		if !ok || !strings.HasPrefix(lease.Name, election.NodeLeasePrefix) {
			return
		}
		node := ptr.Deref(lease.Spec.HolderIdentity, "")
		if node == "" {
			return
		}
		m, err := election.ParseMembership(lease.Annotations[election.AnnotationPools])
		w := leaseWrite{At: time.Now(), Node: node, RV: lease.ResourceVersion, Pools: lease.Annotations[election.AnnotationPools],
			Released: err == nil && len(m) == 0}
		l.mu.Lock()
		l.writes[node] = append(l.writes[node], w)
		l.mu.Unlock()
	}
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: cache.NewListWatchFromClient(cs.CoordinationV1().RESTClient(), "leases", ns, fields.Everything()),
		ObjectType:    &coordinationv1.Lease{},
		Handler:       cache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, o any) { see(o) }},
	})
	go ctrl.Run(l.done)
	return l
}

// close stops the watch.
func (l *leaseLog) close() { close(l.done) }

// lastBefore returns node's last write seen before t.
func (l *leaseLog) lastBefore(node string, t time.Time) (leaseWrite, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ws := l.writes[node]
	i, _ := slices.BinarySearchFunc(ws, t, func(w leaseWrite, t time.Time) int { return w.At.Compare(t) })
	if i == 0 {
		return leaseWrite{}, false
	}
	return ws[i-1], true
}

// waitRelease waits until a write of node's Lease after t releases its
// pools, and returns it.
func (l *leaseLog) waitRelease(ctx context.Context, node string, t time.Time) (leaseWrite, error) {
	for {
		l.mu.Lock()
		for _, w := range l.writes[node] {
			if !w.At.Before(t) && w.Released {
				l.mu.Unlock()
				return w, nil
			}
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return leaseWrite{}, fmt.Errorf("the Lease of %s was not released: %w", node, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// timeline describes every node's Lease writes in [from, to), in order,
// as "node +ms view" from ref, with the view of pool shortened.
func (l *leaseLog) timeline(pool string, ref, from, to time.Time) string {
	l.mu.Lock()
	var ws []leaseWrite
	for _, nws := range l.writes {
		for _, w := range nws {
			if !w.At.Before(from) && w.At.Before(to) {
				ws = append(ws, w)
			}
		}
	}
	l.mu.Unlock()
	slices.SortFunc(ws, func(a, b leaseWrite) int { return a.At.Compare(b.At) })
	var parts []string
	for _, w := range ws {
		view := "-"
		if m, err := election.ParseMembership(w.Pools); err == nil {
			if a, ok := m[pool]; ok {
				view = a.View[:min(6, len(a.View))]
			}
		}
		parts = append(parts, fmt.Sprintf("%s %+.0fms %s", w.Node, float64(w.At.Sub(ref).Microseconds())/1000, view))
	}
	return strings.Join(parts, ", ")
}

// forget drops what was recorded before t.
func (l *leaseLog) forget(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for node, ws := range l.writes {
		i, _ := slices.BinarySearchFunc(ws, t, func(w leaseWrite, t time.Time) int { return w.At.Compare(t) })
		l.writes[node] = slices.Clone(ws[i:])
	}
}
