package conformance

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// lab is one real control plane with the CRDs installed, a typed client and
// a controller-runtime client for the OpenELB types.
type lab struct {
	t   *testing.T
	cp  *harness.ControlPlane
	cs  kubernetes.Interface
	crd client.Client
}

func newLab(t *testing.T) *lab {
	t.Helper()
	return newLabWith(t, harness.Options{ControllerManager: true})
}

func newLabWith(t *testing.T, opts harness.Options) *lab {
	t.Helper()
	cp := harness.StartForTest(t, opts)
	ctx := context.Background()
	if err := cp.ApplyCRDs(ctx); err != nil {
		t.Fatalf("installing CRDs: %v", err)
	}
	c, err := client.New(cp.Config, client.Options{Scheme: apischeme.New()})
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, cp: cp, cs: cp.Client(), crd: c}
	l.namespace(cloudNamespace, nil)
	return l
}

const cloudNamespace = harness.CCMNamespace

func (l *lab) namespace(name string, labels map[string]string) {
	l.t.Helper()
	if err := l.cp.EnsureNamespace(context.Background(), name, labels); err != nil {
		l.t.Fatal(err)
	}
}

// ccm starts the real openelb-cloud-controller-manager binary. Its Lease
// name is per test so tests never wait on each other's leases.
func (l *lab) ccm(name string, extra ...string) *harness.Component {
	l.t.Helper()
	// Shorter than the shipped 15s/10s/2s so takeovers are quick, long
	// enough that a busy 2-core CI machine does not make a leader miss its
	// renewal and flap.
	args := append([]string{
		"--leader-elect-resource-name=" + leaseName(l.t),
		"--leader-elect-lease-duration=8s",
		"--leader-elect-renew-deadline=6s",
		"--leader-elect-retry-period=1s",
		"--v=2",
	}, extra...)
	c, err := l.cp.StartCCM(name, args...)
	if err != nil {
		l.t.Fatalf("starting %s: %v", name, err)
	}
	l.t.Cleanup(func() {
		if l.t.Failed() {
			l.t.Logf("--- %s log tail ---\n%s", name, c.LogTail(60))
		}
		_ = c.Stop()
	})
	return c
}

// in is the lab as seen by a subtest: failures go to t; the control plane
// and everything started on it are shared.
func (l *lab) in(t *testing.T) *lab {
	c := *l
	c.t = t
	return &c
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, s)
}

// apply runs kubectl apply -f on a file of testdata.
func (l *lab) apply(file string) {
	l.t.Helper()
	out, err := l.cp.Kubectl(context.Background(), "apply", "-f", filepath.Join("testdata", file))
	if err != nil {
		l.t.Fatalf("kubectl apply -f %s: %v\n%s", file, err, out)
	}
}

func (l *lab) eip(name, address string, tweak ...func(*v1alpha2.Eip)) *v1alpha2.Eip {
	l.t.Helper()
	e := &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha2.EipSpec{Address: v1alpha2.AddressRange(address)}}
	for _, f := range tweak {
		f(e)
	}
	if err := l.crd.Create(context.Background(), e); err != nil {
		l.t.Fatalf("creating Eip %s: %v", name, err)
	}
	return e
}

// Service option functions, in the style of the cloud-provider's tests.
type svcTweak func(*v1.Service)

func newService(ns, name string, tweaks ...svcTweak) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{
			Type:                          v1.ServiceTypeLoadBalancer,
			Ports:                         []v1.ServicePort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}},
			AllocateLoadBalancerNodePorts: ptr.To(false),
		},
	}
	for _, f := range tweaks {
		f(s)
	}
	return s
}

func annotate(k, v string) svcTweak {
	return func(s *v1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

func withLoadBalancerIP(ip string) svcTweak {
	return func(s *v1.Service) { s.Spec.LoadBalancerIP = ip }
}

func withPorts(ports ...int32) svcTweak {
	return func(s *v1.Service) {
		s.Spec.Ports = nil
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: p, Protocol: v1.ProtocolTCP})
		}
	}
}

func withFamilies(policy v1.IPFamilyPolicy, fams ...v1.IPFamily) svcTweak {
	return func(s *v1.Service) {
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = fams
	}
}

func (l *lab) create(s *v1.Service) *v1.Service {
	l.t.Helper()
	out, err := l.cs.CoreV1().Services(s.Namespace).Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		l.t.Fatalf("creating Service %s/%s: %v", s.Namespace, s.Name, err)
	}
	return out
}

// waitIPs waits until the Service has n ingress addresses and returns them.
func (l *lab) waitIPs(ns, name string, n int, timeout time.Duration) []netip.Addr {
	l.t.Helper()
	var got []netip.Addr
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		s, err := l.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = ingressAddrs(s)
		return len(got) >= n, nil
	})
	if err != nil {
		l.t.Fatalf("Service %s/%s: want %d address(es) within %s, have %v; events: %s", ns, name, n, timeout, got, l.events(ns, name))
	}
	return got
}

func ingressAddrs(s *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range s.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// waitEvent waits for an event with the reason on the Service and returns
// its message.
func (l *lab) waitEvent(ns, name, reason string, timeout time.Duration) string {
	l.t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		evs, err := l.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.InvolvedObject.Kind == "Service" {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		l.t.Fatalf("Service %s/%s: no %s event within %s; events: %s", ns, name, reason, timeout, l.events(ns, name))
	}
	return msg
}

func (l *lab) events(ns, name string) string {
	evs, err := l.cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range evs.Items {
		fmt.Fprintf(&b, "\n  %s %s: %s", e.Type, e.Reason, e.Message)
	}
	return b.String()
}

// allServiceAddrs maps every address in any Service status to its holders.
func (l *lab) allServiceAddrs() map[netip.Addr][]string {
	l.t.Helper()
	svcs, err := l.cs.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	out := map[netip.Addr][]string{}
	for _, s := range svcs.Items {
		for _, a := range ingressAddrs(&s) {
			out[a] = append(out[a], s.Namespace+"/"+s.Name)
		}
	}
	return out
}

// assertNoDuplicates fails when two Services without a sharing key hold one
// address.
func (l *lab) assertNoDuplicates() {
	l.t.Helper()
	for a, holders := range l.allServiceAddrs() {
		if len(holders) > 1 {
			l.t.Errorf("address %s is held by %d Services: %v", a, len(holders), holders)
		}
	}
}

func (l *lab) getEip(name string) *v1alpha2.Eip {
	l.t.Helper()
	var e v1alpha2.Eip
	if err := l.crd.Get(context.Background(), client.ObjectKey{Name: name}, &e); err != nil {
		l.t.Fatalf("getting Eip %s: %v", name, err)
	}
	return &e
}

// waitEip waits until cond holds for the Eip.
func (l *lab) waitEip(name string, timeout time.Duration, cond func(*v1alpha2.Eip) bool) *v1alpha2.Eip {
	l.t.Helper()
	var e v1alpha2.Eip
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := l.crd.Get(ctx, client.ObjectKey{Name: name}, &e); err != nil {
			return false, nil
		}
		return cond(&e), nil
	})
	if err != nil {
		l.t.Fatalf("Eip %s did not reach the expected state within %s; status: %+v", name, timeout, e.Status)
	}
	return &e
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// leaseName is the CCM Lease of a test, so tests never wait on each other.
func leaseName(t testing.TB) string { return "ccm-" + strings.ToLower(sanitize(t.Name())) }
