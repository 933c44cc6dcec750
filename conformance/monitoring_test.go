package conformance

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// The alerting rules: one file, charts/openelb/files/alerts.yaml, that the
// chart's PrometheusRule carries verbatim and that promtool tests as a
// plain rules file.
const (
	alertsFile     = "charts/openelb/files/alerts.yaml"
	alertTestsFile = "conformance/testdata/alerts_test.yaml"
)

// TestAlertRules runs `promtool check rules` on the chart's alerting rules
// and `promtool test rules` on their unit tests (series that fire each
// alert after its `for`, and healthy series that must not), and checks
// that every alert has a test. promtool is built by `make tools` from
// github.com/prometheus/prometheus (conformance/tools/promtool).
func TestAlertRules(t *testing.T) {
	root := repoRoot(t)
	promtool := toolPath(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(root, alertsFile)},
		{"test", "rules", filepath.Join(root, alertTestsFile)},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var tests struct {
		Tests []struct {
			AlertRuleTests []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	readYAML(t, filepath.Join(root, alertTestsFile), &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTests {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, name := range alertNames(t, root) {
		if !fires[name] || !quiet[name] {
			t.Errorf("alert %s: %s needs a case where it fires and one where it does not (fires: %t, quiet: %t)", name, alertTestsFile, fires[name], quiet[name])
		}
	}
}

// ruleGroups is a Prometheus rules file, as far as these tests read it.
type ruleGroups struct {
	Groups []struct {
		Name  string           `json:"name"`
		Rules []map[string]any `json:"rules"`
	} `json:"groups"`
}

func alertNames(t *testing.T, root string) []string {
	t.Helper()
	var rules ruleGroups
	readYAML(t, filepath.Join(root, alertsFile), &rules)
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if n, ok := r["alert"].(string); ok {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s has no alerts", alertsFile)
	}
	return names
}

// TestHelmMonitoring checks the chart's optional Prometheus Operator
// objects: none by default (so the chart still renders exactly deploy/),
// and with metrics.serviceMonitor.enabled and metrics.prometheusRule.enabled
// a ServiceMonitor per binary whose Service selects its pods and names
// their metrics port, and a PrometheusRule holding files/alerts.yaml.
func TestHelmMonitoring(t *testing.T) {
	kinds := []string{"ServiceMonitor", "PrometheusRule", "Service"}
	for key := range objectsByKey(t, helmTemplate(t, "openelb", deployNamespace)) {
		if slices.Contains(kinds, strings.Split(key, "/")[0]) {
			t.Errorf("default values render %s; the monitoring objects must be opt-in", key)
		}
	}

	objs := objectsByKey(t, helmTemplate(t, "lb", "lb-system",
		"--set", "metrics.serviceMonitor.enabled=true",
		"--set", "metrics.prometheusRule.enabled=true",
		"--set", "metrics.serviceMonitor.labels.release=kps",
		"--set", "metrics.prometheusRule.labels.release=kps",
		"--set", "speaker.healthPort=9443",
	))
	var d struct {
		Spec struct {
			Template struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
				Spec     v1.PodSpec        `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	for _, c := range []struct{ workload, service, monitor, job, port, scheme string }{
		{"Deployment/lb-system/openelb-manager", "Service/lb-system/openelb-manager-metrics", "ServiceMonitor/lb-system/openelb-manager", "openelb-manager", "https", "https"},
		{"DaemonSet/lb-system/openelb-speaker", "Service/lb-system/openelb-speaker-metrics", "ServiceMonitor/lb-system/openelb-speaker", "openelb-speaker", "health", "http"},
	} {
		fromObject(t, objs[c.workload], &d)
		var svc v1.Service
		fromObject(t, objs[c.service], &svc)
		podLabels := d.Spec.Template.Metadata.Labels
		for k, v := range svc.Spec.Selector {
			if podLabels[k] != v {
				t.Errorf("%s selects %s=%s, which the pods of %s (%v) lack", c.service, k, v, c.workload, podLabels)
			}
		}
		var containerPort int32
		for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
			if p.Name == c.port {
				containerPort = p.ContainerPort
			}
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != c.port || svc.Spec.Ports[0].TargetPort.String() != c.port ||
			svc.Spec.Ports[0].Port != containerPort || containerPort == 0 || svc.Spec.ClusterIP != v1.ClusterIPNone {
			t.Errorf("%s: ports %+v clusterIP %q, want headless with port %s (%d) to the container's", c.service, svc.Spec.Ports, svc.Spec.ClusterIP, c.port, containerPort)
		}
		// Not-ready pods stay targets: the not-ready alert reads them.
		if !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("%s does not publish not-ready addresses", c.service)
		}

		var sm struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
			Spec     struct {
				JobLabel          string               `json:"jobLabel"`
				Selector          metav1.LabelSelector `json:"selector"`
				NamespaceSelector struct {
					MatchNames []string `json:"matchNames"`
				} `json:"namespaceSelector"`
				Endpoints []struct {
					Port   string `json:"port"`
					Path   string `json:"path"`
					Scheme string `json:"scheme"`
				} `json:"endpoints"`
			} `json:"spec"`
		}
		fromObject(t, objs[c.monitor], &sm)
		for k, v := range sm.Spec.Selector.MatchLabels {
			if svc.Labels[k] != v {
				t.Errorf("%s selects %s=%s, which %s (%v) lacks", c.monitor, k, v, c.service, svc.Labels)
			}
		}
		// The alerts' up{job=...} rules need the job named after the binary.
		if job := svc.Labels[sm.Spec.JobLabel]; job != c.job {
			t.Errorf("%s: jobLabel %q gives job %q, want %s", c.monitor, sm.Spec.JobLabel, job, c.job)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != c.port || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Scheme != c.scheme {
			t.Errorf("%s endpoints %+v, want port %s, /metrics, %s", c.monitor, sm.Spec.Endpoints, c.port, c.scheme)
		}
		if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{"lb-system"}) || sm.Metadata.Labels["release"] != "kps" {
			t.Errorf("%s: namespaceSelector %v, labels %v", c.monitor, sm.Spec.NamespaceSelector.MatchNames, sm.Metadata.Labels)
		}
	}

	var pr struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     ruleGroups        `json:"spec"`
	}
	fromObject(t, objs["PrometheusRule/lb-system/openelb"], &pr)
	var file ruleGroups
	readYAML(t, filepath.Join(repoRoot(t), alertsFile), &file)
	if diff := cmp.Diff(file, pr.Spec); diff != "" || len(file.Groups) == 0 {
		t.Errorf("PrometheusRule spec differs from %s (-file +rendered):\n%s", alertsFile, diff)
	}
	if pr.Metadata.Labels["release"] != "kps" {
		t.Errorf("PrometheusRule labels %v lack metrics.prometheusRule.labels", pr.Metadata.Labels)
	}
}

// TestPoolMetrics reads the CCM's /metrics on a real control plane: the
// leader exports openelb_pool_addresses_total and _in_use per valid Eip
// (labels pool, family, protocol), equal to the Eips' status.poolSize and
// status.usage as Services come and go; an invalid Eip has no series; a
// deleted Eip's series go; a standby replica exports none.
func TestPoolMetrics(t *testing.T) {
	l := newLab(t)
	ccm := l.ccm("ccm-leader")
	l.namespace("poolmetrics", nil)
	l.eip("pm-v4", "10.31.0.0/29", func(e *v1alpha2.Eip) {
		e.Spec.Namespaces, e.Spec.SkipNetworkAndBroadcast = []string{"poolmetrics"}, true // 6 addresses
	})
	l.eip("pm-v6", "fd00:31::/120", func(e *v1alpha2.Eip) {
		e.Spec.Namespaces = []string{"poolmetrics"}
		e.Spec.Protocol, e.Spec.Interface = v1alpha2.ProtocolLayer2, "eth0"
	})
	// Not valid (Ready=False, UnsupportedProtocol): no series. (An overlap
	// would do too, but which of two Eips created in one second is the
	// newer is decided by name.)
	l.eip("pm-vip", "10.31.1.1", func(e *v1alpha2.Eip) { e.Spec.Protocol = v1alpha2.ProtocolVIP })

	for i := range 3 {
		l.create(newService("poolmetrics", fmt.Sprintf("v4-%d", i)))
	}
	l.create(newService("poolmetrics", "v6", withFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)))
	for i := range 3 {
		l.waitIPs("poolmetrics", fmt.Sprintf("v4-%d", i), 1, ipTimeout)
	}
	l.waitIPs("poolmetrics", "v6", 1, ipTimeout)

	want := map[string]float64{
		`openelb_pool_addresses_total{family="IPv4",pool="pm-v4",protocol="bgp"}`:     6,
		`openelb_pool_addresses_in_use{family="IPv4",pool="pm-v4",protocol="bgp"}`:    3,
		`openelb_pool_addresses_total{family="IPv6",pool="pm-v6",protocol="layer2"}`:  256,
		`openelb_pool_addresses_in_use{family="IPv6",pool="pm-v6",protocol="layer2"}`: 1,
	}
	waitPoolSeries(t, ccm, want)
	// The same numbers as the Eips' status.
	for _, name := range []string{"pm-v4", "pm-v6"} {
		e := l.waitEip(name, 10*time.Second, func(e *v1alpha2.Eip) bool { return e.Status.ObservedGeneration == e.Generation })
		fam := "IPv4"
		if !e.Status.V4 {
			fam = "IPv6"
		}
		total := fmt.Sprintf(`openelb_pool_addresses_total{family=%q,pool=%q,protocol=%q}`, fam, name, e.EffectiveProtocol())
		inUse := strings.Replace(total, "_total", "_in_use", 1)
		if want[total] != float64(e.Status.PoolSize) || want[inUse] != float64(e.Status.Usage) {
			t.Errorf("Eip %s status poolSize %d usage %d; metrics say %v and %v", name, e.Status.PoolSize, e.Status.Usage, want[total], want[inUse])
		}
	}

	// A standby replica runs no provider loops: no pool series at all. It
	// is a standby once its elector says so (leader_election_master_status
	// 0, set when the elector is built, which may be after /healthz serves).
	standby := l.ccm("ccm-standby")
	var body string
	_ = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, body = ccmGet(standby, "/metrics")
		return strings.Contains(body, "leader_election_master_status{") && strings.Contains(grepLines(body, "leader_election_master_status{"), "} 0"), nil
	})
	if got := grepLines(body, "openelb_pool_", "leader_election_master_status{"); strings.Contains(got, "openelb_pool_") || !strings.Contains(got, "leader_election_master_status{") {
		t.Errorf("standby /metrics: want leader_election_master_status 0 and no openelb_pool_ series, got:\n%s", got)
	}

	// Releases count down; a deleted Eip's series go.
	if err := l.cs.CoreV1().Services("poolmetrics").Delete(context.Background(), "v4-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := l.cs.CoreV1().Services("poolmetrics").Delete(context.Background(), "v6", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want[`openelb_pool_addresses_in_use{family="IPv4",pool="pm-v4",protocol="bgp"}`] = 2
	delete(want, `openelb_pool_addresses_total{family="IPv6",pool="pm-v6",protocol="layer2"}`)
	delete(want, `openelb_pool_addresses_in_use{family="IPv6",pool="pm-v6",protocol="layer2"}`)
	// The Eip goes once the finalizer is removed, after its address is
	// released.
	if err := l.crd.Delete(context.Background(), &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: "pm-v6"}}); err != nil {
		t.Fatal(err)
	}
	waitPoolSeries(t, ccm, want)
}

// waitPoolSeries polls the CCM's /metrics until its openelb_pool_ series
// are exactly want (series → value).
func waitPoolSeries(t *testing.T, ccm *harness.Component, want map[string]float64) {
	t.Helper()
	var got map[string]float64
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		code, body := ccmGet(ccm, "/metrics")
		if code != http.StatusOK {
			last = fmt.Sprintf("%d %s", code, body)
			return false, nil
		}
		got = map[string]float64{}
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "openelb_pool_") {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				return false, fmt.Errorf("/metrics line %q: %w", line, err)
			}
			got[line[:i]] = v
		}
		return cmp.Equal(got, want), nil
	})
	if err != nil {
		t.Fatalf("openelb_pool_ series: %v (last error %s)\n%s", err, last, cmp.Diff(want, got))
	}
}

// grepLines keeps the lines of s that contain one of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
