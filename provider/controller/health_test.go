package controller

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	genericcontrollermanager "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"

	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

// readyLB is a LoadBalancer that only answers Ready.
type readyLB struct {
	cloudprovider.LoadBalancer
	ready bool
}

func (r *readyLB) Ready() bool { return r.ready }

func TestCheck(t *testing.T) {
	lb := &readyLB{}
	synced := false
	c := &Controller{lb: lb, synced: func() bool { return synced }}
	steps := []struct {
		name string
		step func()
		want error
	}{
		{"provider re-adopting", func() {}, errProviderNotReady},
		{"provider ready, cache not synced", func() { lb.ready = true }, errCacheNotSynced},
		{"cache synced, workers not started", func() { synced = true }, errNotRunning},
		{"running", func() { c.running.Store(true) }, nil},
	}
	for _, s := range steps {
		s.step()
		if got := c.Check(nil); got != s.want {
			t.Errorf("%s: Check() = %v, want %v", s.name, got, s.want)
		}
	}
	// A provider without Ready is taken as ready.
	other := &Controller{lb: struct{ cloudprovider.LoadBalancer }{}, synced: func() bool { return true }}
	other.running.Store(true)
	if err := other.Check(nil); err != nil {
		t.Errorf("provider without Ready: Check() = %v, want nil", err)
	}
	if got := c.Name(); got != "service-lb-controller" {
		t.Errorf("Name() = %q, want service-lb-controller: the health check is served under it", got)
	}
}

// fakeCloud is a cloud provider whose only part is lb.
type fakeCloud struct {
	cloudprovider.Interface
	lb cloudprovider.LoadBalancer
}

func (f fakeCloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return f.lb, true }

// fakeBuilder hands out one fake clientset.
type fakeBuilder struct{ cs kubernetes.Interface }

func (b fakeBuilder) Config(string) (*rest.Config, error)         { return &rest.Config{}, nil }
func (b fakeBuilder) ConfigOrDie(string) *rest.Config             { return &rest.Config{} }
func (b fakeBuilder) Client(string) (kubernetes.Interface, error) { return b.cs, nil }
func (b fakeBuilder) ClientOrDie(string) kubernetes.Interface     { return b.cs }

// The framework mounts a controller's own check only if the init function
// returns it as a HealthCheckable; otherwise /healthz gets a ping that
// passes while the provider is not ready. This checks start returns the
// controller with the real check, through the framework's types.
func TestStartReturnsTheHealthCheck(t *testing.T) {
	cs := fake.NewClientset()
	factory := informers.NewSharedInformerFactory(cs, 0)
	cfg := (&cloudcontrollerconfig.Config{SharedInformers: factory, ClientBuilder: fakeBuilder{cs}}).Complete()
	cfg.ComponentConfig.ServiceController.ConcurrentServiceSyncs = 1
	lb := &readyLB{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctrl, started, err := start(app.ControllerInitContext{ClientName: "service-controller"}, cfg, fakeCloud{lb: lb}, cloud.Classes{})(ctx, genericcontrollermanager.ControllerContext{})
	if err != nil || !started {
		t.Fatalf("start: started=%v err=%v", started, err)
	}
	hc, ok := ctrl.(controller.HealthCheckable)
	if !ok || hc.HealthChecker() == nil {
		t.Fatalf("start returned %T, want a controller.HealthCheckable with a checker", ctrl)
	}
	check := hc.HealthChecker()
	if err := check.Check(nil); err != errProviderNotReady {
		t.Errorf("before the provider is ready: Check() = %v, want %v", err, errProviderNotReady)
	}
	lb.ready = true
	if err := check.Check(nil); err != errCacheNotSynced {
		t.Errorf("before the informers start: Check() = %v, want %v", err, errCacheNotSynced)
	}
	factory.Start(ctx.Done())
	var last error
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		last = check.Check(nil)
		return last == nil, nil
	}); err != nil {
		t.Errorf("with the provider ready and the informers running: Check() = %v, want nil", last)
	}
}
