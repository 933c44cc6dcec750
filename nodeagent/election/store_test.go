package election

import (
	"context"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

// fakeInformer keeps the handler CachedLeases registers, to send it events.
type fakeInformer struct {
	h toolscache.ResourceEventHandler
}

func (f *fakeInformer) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	f.h = h
	return nil, nil
}

// mapCache is a watch cache of Leases by namespace/name.
type mapCache map[string]*coordinationv1.Lease

func (m mapCache) Get(_ context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	if l := m[namespace+"/"+name]; l != nil {
		return l.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(coordinationv1.Resource("leases"), name)
}

// recordingWriter records the writes that reach the API server.
type recordingWriter struct{ writes []string }

func (w *recordingWriter) Create(_ context.Context, l *coordinationv1.Lease, _ metav1.CreateOptions) (*coordinationv1.Lease, error) {
	w.writes = append(w.writes, "create "+l.Name)
	return l, nil
}

func (w *recordingWriter) Update(_ context.Context, l *coordinationv1.Lease, _ metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	w.writes = append(w.writes, "update "+l.Name)
	return l, nil
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestCachedLeases: reads come from the cache of the store's namespace,
// writes go to the API, and every watch event of a Lease (also a delete
// seen late) wakes its waiters and only its.
func TestCachedLeases(t *testing.T) {
	lease := func(name string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "openelb-system", Name: name}}
	}
	cache := mapCache{"openelb-system/a": lease("a"), "other/b": lease("b")}
	w := &recordingWriter{}
	s := NewCachedLeases("openelb-system", cache, w)
	inf := &fakeInformer{}
	if err := s.Watch(inf); err != nil {
		t.Fatal(err)
	}

	if l, err := s.Get(context.Background(), "a"); err != nil || l.Name != "a" {
		t.Errorf("Get(a) = %v, %v", l, err)
	}
	if _, err := s.Get(context.Background(), "b"); !apierrors.IsNotFound(err) {
		t.Errorf("Get(b) of another namespace: %v, want NotFound", err)
	}
	_, _ = s.Create(context.Background(), lease("a"))
	_, _ = s.Update(context.Background(), lease("a"))
	if got := w.writes; len(got) != 2 || got[0] != "create a" || got[1] != "update a" {
		t.Errorf("writes %v, want create a, update a", got)
	}

	for _, tc := range []struct {
		name string
		send func(l *coordinationv1.Lease)
	}{
		{"add", func(l *coordinationv1.Lease) { inf.h.OnAdd(l, false) }},
		{"update", func(l *coordinationv1.Lease) { inf.h.OnUpdate(l, l) }},
		{"delete", func(l *coordinationv1.Lease) { inf.h.OnDelete(l) }},
		{"delete seen late", func(l *coordinationv1.Lease) {
			inf.h.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "openelb-system/" + l.Name, Obj: l})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, other := s.Changed("a"), s.Changed("c")
			if s.Changed("a") != a {
				t.Fatal("two waiters of one Lease got different channels")
			}
			tc.send(lease("a"))
			if !closed(a) {
				t.Error("the waiter of a was not woken")
			}
			if closed(other) {
				t.Error("the waiter of another Lease was woken")
			}
			if closed(s.Changed("a")) {
				t.Error("a new waiter of a starts woken")
			}
		})
	}
}
