package conformance

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

func withLabels(kv map[string]string) svcTweak {
	return func(s *v1.Service) { s.Labels = kv }
}

// TestServiceSelectorPools: an Eip's spec.serviceSelector limits it to
// matching Services, whichever way they ask; automatic allocation falls
// through to the next pool; a Service that names the pool without the
// labels is refused (PoolNotSelected) until it is labelled; a selector the
// API server accepts but that is not valid keeps the Eip out, saying so.
func TestServiceSelectorPools(t *testing.T) {
	l := newLab(t)
	l.ccm("ccm")
	l.namespace("sel", nil)
	gold := &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}
	l.eip("eip-gold", "10.17.1.0/30", func(e *v1alpha2.Eip) {
		e.Spec.Namespaces, e.Spec.Priority, e.Spec.ServiceSelector = []string{"sel"}, 1, gold
	})
	l.eip("eip-plain", "10.17.2.0/30", func(e *v1alpha2.Eip) { e.Spec.Namespaces, e.Spec.Priority = []string{"sel"}, 2 })

	l.create(newService("sel", "gold", withLabels(map[string]string{"tier": "gold", "app": "web"})))
	l.create(newService("sel", "plain"))
	if ips := l.waitIPs("sel", "gold", 1, ipTimeout); !mustPrefix("10.17.1.0/30").Contains(ips[0]) {
		t.Errorf("labelled Service got %v, want an address of eip-gold", ips)
	}
	if ips := l.waitIPs("sel", "plain", 1, ipTimeout); !mustPrefix("10.17.2.0/30").Contains(ips[0]) {
		t.Errorf("unlabelled Service got %v, want an address of eip-plain (eip-gold does not select it)", ips)
	}

	l.create(newService("sel", "named", annotate(v1alpha2.AnnotationEip, "eip-gold")))
	if msg := l.waitEvent("sel", "named", "PoolNotSelected", ipTimeout); !strings.Contains(msg, "tier=gold") {
		t.Errorf("refusal does not name the selector: %s", msg)
	}
	if _, err := l.cs.CoreV1().Services("sel").Patch(context.Background(), "named", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"tier":"gold"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if ips := l.waitIPs("sel", "named", 1, ipTimeout); !mustPrefix("10.17.1.0/30").Contains(ips[0]) {
		t.Errorf("once labelled, the Service got %v, want an address of eip-gold", ips)
	}

	l.eip("eip-bad-selector", "10.17.3.0/30", func(e *v1alpha2.Eip) {
		e.Spec.ServiceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "Bogus"}}}
	})
	l.waitEip("eip-bad-selector", ipTimeout, func(e *v1alpha2.Eip) bool {
		c := meta.FindStatusCondition(e.Status.Conditions, "Ready")
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "InvalidServiceSelector" && strings.Contains(c.Message, "Bogus")
	})
}
