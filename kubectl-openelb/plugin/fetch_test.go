package plugin

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// TestFetchLeases: status reads the layer-2 node Leases of the openelb
// namespace (those with the speakers' label only) when a plan has a
// layer-2 address, and does without them when it may not read them.
func TestFetchLeases(t *testing.T) {
	in := spreadInput()
	svc, pl := in.Services[0], in.Plans[0]
	mine := l2Lease("n1", 0, l2Acks("l2", "n1", "n1"))
	unlabelled := l2Lease("n2", 0, l2Acks("l2", "n2", "n2"))
	unlabelled.Labels = nil
	elsewhere := l2Lease("n3", 0, l2Acks("l2", "n3", "n3"))
	elsewhere.Namespace = "other"
	objs := []client.Object{&svc, &pl, &mine, &unlabelled, &elsewhere}

	c := fake.NewClientBuilder().WithScheme(apischeme.New()).WithObjects(objs...).Build()
	f := &fetcher{c: c, now: func() time.Time { return now }, openelbNamespace: "openelb-system"}
	got, err := f.statusInput(context.Background(), "ns", "s")
	if err != nil {
		t.Fatal(err)
	}
	if !got.LeasesListed || len(got.Leases) != 1 || got.Leases[0].Name != mine.Name || got.LeaseNamespace != "openelb-system" {
		t.Errorf("Leases %v (listed %v, namespace %q), want %s only", got.Leases, got.LeasesListed, got.LeaseNamespace, mine.Name)
	}

	forbidden := interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if _, ok := list.(*coordinationv1.LeaseList); ok {
			return apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "", nil)
		}
		return c.List(ctx, list, opts...)
	}}
	f.c = fake.NewClientBuilder().WithScheme(apischeme.New()).WithObjects(objs...).WithInterceptorFuncs(forbidden).Build()
	got, err = f.statusInput(context.Background(), "ns", "s")
	if err != nil {
		t.Fatal(err)
	}
	if got.LeasesListed || len(got.Leases) != 0 {
		t.Errorf("forbidden Leases: listed %v, %d Leases", got.LeasesListed, len(got.Leases))
	}

	// A plan without a layer-2 address needs no Lease.
	pl.Spec.Addresses = []v1alpha2.PlanAddress{{IP: "10.0.0.12", Pool: "p", Protocol: v1alpha2.ProtocolBGP}}
	f.c = fake.NewClientBuilder().WithScheme(apischeme.New()).WithObjects(&svc, &pl, &mine).WithInterceptorFuncs(forbidden).Build()
	got, err = f.statusInput(context.Background(), "ns", "s")
	if err != nil || got.LeasesListed {
		t.Errorf("BGP only: listed %v, err %v", got.LeasesListed, err)
	}
}
