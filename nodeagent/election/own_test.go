package election

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// memLeases is an in-memory LeaseClient that numbers writes like an API
// server does: one resourceVersion counter for every write.
type memLeases struct {
	mu     sync.Mutex
	rv     int
	leases map[string]*coordinationv1.Lease
}

func (c *memLeases) Get(_ context.Context, name string, _ metav1.GetOptions) (*coordinationv1.Lease, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.leases[name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, name)
	}
	return l.DeepCopy(), nil
}

func (c *memLeases) Create(ctx context.Context, l *coordinationv1.Lease, _ metav1.CreateOptions) (*coordinationv1.Lease, error) {
	return c.store(l)
}

func (c *memLeases) Update(ctx context.Context, l *coordinationv1.Lease, _ metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	return c.store(l)
}

func (c *memLeases) store(l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rv++
	l = l.DeepCopy()
	l.ResourceVersion = strconv.Itoa(c.rv)
	c.leases[l.Name] = l
	return l.DeepCopy(), nil
}

// TestOwnLeaseFirstWrite checks that a view's switch is the first write
// that carried it, not a renewal after it: a later switch would make the
// other nodes' acknowledgements (which they renew early for only once)
// wait a renewal period.
func TestOwnLeaseFirstWrite(t *testing.T) {
	ctx := context.Background()
	c := &memLeases{leases: map[string]*coordinationv1.Lease{}}
	o := NewOwnLease(c, "ns", "a", LeaseTimings{Duration: time.Hour, RenewDeadline: time.Hour, RetryPeriod: time.Hour},
		func() metav1.ObjectMeta { return metav1.ObjectMeta{} }, func() {})
	seq1 := o.Set(Membership{"p": {View: "v1"}})
	if rv := o.FirstWrite(o.State().Epoch, seq1); rv != "" {
		t.Fatalf("FirstWrite before any write = %q, want none", rv)
	}
	for range 3 {
		if err := o.write(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c.rv += 10 // other nodes' writes
	seq2 := o.Set(Membership{"p": {View: "v2"}})
	seq3 := o.Set(Membership{"p": {View: "v3"}}) // before seq2 was written
	for range 2 {
		if err := o.write(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st := o.State()
	if st.Written.RV != "15" || st.Written.Seq != seq3 {
		t.Fatalf("last write %+v, want seq %d at resourceVersion 15", st.Written, seq3)
	}
	for _, tc := range []struct {
		seq  uint64
		want string
	}{{seq1, "1"}, {seq2, "14"}, {seq3, "14"}, {seq3 + 1, ""}} {
		if got := o.FirstWrite(st.Epoch, tc.seq); got != tc.want {
			t.Errorf("FirstWrite(seq %d) = %q, want %q", tc.seq, got, tc.want)
		}
	}
	if got := o.FirstWrite(st.Epoch+1, seq1); got != "" {
		t.Errorf("FirstWrite of another epoch = %q, want none", got)
	}
	o.mu.Lock()
	o.stopLiveLocked()
	o.mu.Unlock()
	if got := o.FirstWrite(o.State().Epoch, seq3); got != "" {
		t.Errorf("FirstWrite after the Lease lapsed = %q, want none (a new epoch switches afresh)", got)
	}
}
