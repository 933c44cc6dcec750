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
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// LeaseClient reads and writes Leases at the API server; client-go's
// LeaseInterface is one.
type LeaseClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error)
	Create(ctx context.Context, lease *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error)
}

// Written is the last successful write of a node's Lease in the current
// epoch: the sequence number of the Membership it carried (Set's) and the
// resourceVersion the API server gave it.
type Written struct {
	Epoch, Seq uint64
	RV         string
}

// OwnState is a node's Lease as the node itself knows it.
type OwnState struct {
	// Live: a write sent less than RenewDeadline ago succeeded, so the
	// other nodes cannot consider this node gone. While not live the node
	// answers nothing.
	Live bool
	// Epoch counts the times the node stopped being live; a new epoch
	// starts every pool's hand-over afresh.
	Epoch uint64
	// Seq is the sequence number of the current Membership (Set's).
	Seq     uint64
	Written Written
}

// OwnLease keeps this node's liveness Lease: it renews it every
// RetryPeriod while the node is a candidate of some pool, carrying the
// Membership the node acts on, and writes at once when that changes (Set)
// or when asked (Touch).
//
// Liveness is judged by the node from its own successful writes, timed
// from when each request was sent: RenewDeadline after the last one the
// node stops being live (Changed is called) even if a request is still in
// flight, strictly before the others, who time the Lease from when they
// saw the write and wait Duration, may take its addresses.
//
// Writes are sequential, so their results arrive in resourceVersion order.
type OwnLease struct {
	client    LeaseClient
	namespace string
	name      string
	node      string
	t         LeaseTimings
	meta      func() metav1.ObjectMeta
	changed   func()
	log       klog.Logger

	writeMu sync.Mutex // one write at a time

	mu      sync.Mutex
	want    Membership
	seq     uint64
	active  bool // renewing: some pool listed, or the release not written yet
	lease   *coordinationv1.Lease
	state   OwnState
	lastOK  time.Time // send time of the last successful write of this epoch
	expiry  *time.Timer
	kick    chan struct{}
	writes  int64
	lastErr error
	// firsts holds, for the current epoch, the first successful write
	// of each Membership sequence number written (ascending; the last
	// maxFirsts): where a view's switch happened (FirstWrite).
	firsts []Written
}

// maxFirsts bounds OwnLease.firsts. Sequence numbers change only with the
// pools' views, so the ones a hand-over still waits on are the last few;
// an older one is answered with the oldest kept, a later write, which only
// makes the hand-over wait for newer acknowledgements.
const maxFirsts = 32

// NewOwnLease returns the Lease keeper of node. meta gives the labels,
// annotations (other than AnnotationPools) and owner of the Lease, read at
// every write; changed is called (without locks held) whenever State may
// have changed.
func NewOwnLease(client LeaseClient, namespace, node string, t LeaseTimings, meta func() metav1.ObjectMeta, changed func()) *OwnLease {
	return &OwnLease{
		client: client, namespace: namespace, name: NodeLeaseName(node), node: node, t: t, meta: meta, changed: changed,
		log: klog.Background(), want: Membership{}, kick: make(chan struct{}, 1),
	}
}

// Describe names the Lease as namespace/name, for logs and reports.
func (o *OwnLease) Describe() string { return o.namespace + "/" + o.name }

// Set makes m the Membership the Lease carries from its next write, which
// is at once when it changed, and returns its sequence number. The caller
// must already act on m: answer nothing it does not own under m's views.
func (o *OwnLease) Set(m Membership) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if maps.Equal(m, o.want) {
		return o.seq
	}
	o.want = maps.Clone(m)
	o.seq++
	o.state.Seq = o.seq
	o.active = true
	o.poke()
	return o.seq
}

// Touch writes the Lease now (a renewal ahead of time), so that another
// node sees an acknowledgement newer than its switch without waiting for
// the next renewal.
func (o *OwnLease) Touch() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.active {
		o.poke()
	}
}

func (o *OwnLease) poke() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// State returns what the node knows of its Lease.
func (o *OwnLease) State() OwnState {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state
}

// FirstWrite returns the resourceVersion of the first successful write of
// epoch that carried Membership seq or a later one: the switch of a view
// Set made at seq (see Ready). It is "" while there is none, or when epoch
// is over.
//
// The latest write would be a later switch, which is still safe but makes
// the hand-over wait for acknowledgements newer than that write: a
// renewal that happens to complete between the view's first write and the
// caller's look at it would otherwise delay the hand-over by a renewal
// period, since the other nodes renew early only for the first one.
func (o *OwnLease) FirstWrite(epoch, seq uint64) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if epoch != o.state.Epoch {
		return ""
	}
	for _, w := range o.firsts {
		if w.Seq >= seq {
			return w.RV
		}
	}
	return ""
}

// Writes is how many writes succeeded, for tests and benchmarks.
func (o *OwnLease) Writes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writes
}

// Run renews the Lease until ctx ends.
func (o *OwnLease) Run(ctx context.Context) {
	o.log = klog.FromContext(ctx).WithValues("lease", o.Describe())
	tick := time.NewTicker(o.t.RetryPeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.kick:
		case <-tick.C:
		}
		o.mu.Lock()
		active := o.active
		o.mu.Unlock()
		if active {
			o.write(ctx)
		}
	}
}

// Release writes the Lease with no pool, so the other nodes take this
// node's addresses at once instead of after Duration; the caller has
// stopped answering. It waits for the write until ctx ends.
func (o *OwnLease) Release(ctx context.Context) error {
	o.Set(Membership{})
	for {
		o.mu.Lock()
		done := !o.active
		o.mu.Unlock()
		if done {
			return nil
		}
		if err := o.write(ctx); err != nil {
			select {
			case <-ctx.Done():
				return fmt.Errorf("releasing Lease %s: %w", o.Describe(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// write sends one write of the Lease and records its outcome.
func (o *OwnLease) write(ctx context.Context) error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.mu.Lock()
	m, seq, epoch, cur := maps.Clone(o.want), o.seq, o.state.Epoch, o.lease
	o.mu.Unlock()

	sent := time.Now()
	wctx, cancel := context.WithTimeout(ctx, o.t.RenewDeadline)
	defer cancel()
	res, err := o.send(wctx, cur, m, sent)
	o.mu.Lock()
	if err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			o.lease = nil // read it again
		}
		first := o.lastErr == nil
		o.lastErr = err
		o.mu.Unlock()
		if first {
			o.log.Info("Renewing the layer-2 Lease failed; retrying", "err", err)
		} else {
			o.log.V(2).Info("Renewing the layer-2 Lease failed; retrying", "err", err)
		}
		return err
	}
	if o.lastErr != nil {
		o.log.Info("Renewing the layer-2 Lease works again")
	}
	o.lastErr = nil
	o.lease = res
	o.writes++
	if len(m) == 0 && seq == o.seq {
		// Released: no pool to keep alive.
		o.active = false
		o.stopLiveLocked()
	} else if epoch == o.state.Epoch {
		o.state.Written = Written{Epoch: epoch, Seq: seq, RV: res.ResourceVersion}
		if n := len(o.firsts); n == 0 || seq > o.firsts[n-1].Seq {
			if n == maxFirsts {
				o.firsts = append(o.firsts[:0], o.firsts[1:]...)
			}
			o.firsts = append(o.firsts, o.state.Written)
		}
		if sent.After(o.lastOK) {
			o.lastOK = sent
		}
		o.state.Live = true
		o.armLocked()
	}
	o.mu.Unlock()
	o.changed()
	return nil
}

// send creates or updates the Lease with m.
func (o *OwnLease) send(ctx context.Context, cur *coordinationv1.Lease, m Membership, now time.Time) (*coordinationv1.Lease, error) {
	if cur == nil {
		l, err := o.client.Get(ctx, o.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, err
		default:
			cur = l
		}
	}
	meta := o.meta()
	var l *coordinationv1.Lease
	if cur == nil {
		l = &coordinationv1.Lease{ObjectMeta: meta}
		l.Name, l.Namespace = o.name, o.namespace
		l.Spec.AcquireTime = &metav1.MicroTime{Time: now}
	} else {
		l = cur.DeepCopy()
		l.Labels, l.OwnerReferences = meta.Labels, meta.OwnerReferences
		if ptr.Deref(l.Spec.HolderIdentity, "") != o.node {
			l.Spec.AcquireTime = &metav1.MicroTime{Time: now}
		}
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	maps.Copy(l.Annotations, meta.Annotations)
	l.Annotations[AnnotationPools] = m.Encode()
	l.Spec.HolderIdentity = ptr.To(o.node)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(o.t.Duration / time.Second))
	l.Spec.RenewTime = &metav1.MicroTime{Time: now}
	if cur == nil {
		return o.client.Create(ctx, l, metav1.CreateOptions{})
	}
	return o.client.Update(ctx, l, metav1.UpdateOptions{})
}

// armLocked (re)starts the timer that ends liveness RenewDeadline after
// the last successful write was sent.
func (o *OwnLease) armLocked() {
	armTimer(&o.expiry, time.Until(o.lastOK.Add(o.t.RenewDeadline)), o.expire)
}

// armTimer makes *t call f after d, creating the timer the first time.
func armTimer(t **time.Timer, d time.Duration, f func()) {
	if *t == nil {
		*t = time.AfterFunc(d, f)
		return
	}
	(*t).Reset(d)
}

// expire ends liveness if no write succeeded meanwhile.
func (o *OwnLease) expire() {
	o.mu.Lock()
	if !o.state.Live {
		o.mu.Unlock()
		return
	}
	if d := time.Until(o.lastOK.Add(o.t.RenewDeadline)); d > 0 {
		o.expiry.Reset(d)
		o.mu.Unlock()
		return
	}
	o.stopLiveLocked()
	o.mu.Unlock()
	o.log.Info("Layer-2 Lease not renewed within the renew deadline; answering nothing until it is", "deadline", o.t.RenewDeadline)
	o.changed()
}

// stopLiveLocked ends the epoch: nothing written so far counts for the
// hand-overs to come.
func (o *OwnLease) stopLiveLocked() {
	if o.expiry != nil {
		o.expiry.Stop()
	}
	o.state.Live = false
	o.state.Epoch++
	o.state.Written = Written{}
	o.firsts = nil
	o.lastOK = time.Time{}
}
