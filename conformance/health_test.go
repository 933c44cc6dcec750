package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// TestUndecodableObject stores a BgpPeer that no longer decodes (peerAs -1
// in a uint32 field, as an older schema let through; written straight into
// etcd, since today's API server refuses it), so every list of BgpPeers
// fails in the CCM and the speakers. Both keep waiting rather than give
// up, say so (the CCM's service-lb-controller check and the speaker's
// /readyz fail, the logs name the kind and the error, the speaker stays
// live), and once the object is fixed both become ready and serve, without
// a restart.
func TestUndecodableObject(t *testing.T) {
	l := newNodeLab(t)
	ctx := context.Background()
	l.eip("eip-sample-pool", "172.22.0.2-172.22.0.10", func(e *v1alpha2.Eip) {
		e.Annotations = map[string]string{v1alpha2.AnnotationDefaultEip: "true"}
	})
	if _, err := l.cs.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	storeBadPeer(t, l, "bad-peer")

	ccm := l.ccm("ccm")
	speaker, healthPort := startHealthSpeaker(t, l, "node-a")
	l.create(newService("default", "nginx"))

	// Not ready, and saying why.
	const ccmLine, speakerLine = "Informer caches not synced", "Caches not synced"
	waitLogLine(t, ccm, ccmLine, "v1alpha2.BgpPeer", "cannot unmarshal number -1")
	waitLogLine(t, speaker, speakerLine, "v1alpha2.BgpPeer", "cannot unmarshal number -1")
	if code, body := ccmGet(ccm, "/healthz?verbose=1"); code != http.StatusInternalServerError || !strings.Contains(body, "[-]service-lb-controller failed") {
		t.Errorf("CCM /healthz?verbose=1 while BgpPeers cannot be listed: %d %q, want 500 with service-lb-controller failing", code, body)
	}
	// What the shipped liveness probe asks (deploy/manager.yaml): passes.
	if code, body := ccmGet(ccm, "/healthz?exclude=service-lb-controller"); code != http.StatusOK {
		t.Errorf("CCM /healthz?exclude=service-lb-controller: %d %q, want 200: a restart would not help", code, body)
	}
	if code, body := speakerGet(healthPort, "/readyz"); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "caches not synced") || !strings.Contains(body, "v1alpha2.BgpPeer") {
		t.Errorf("speaker /readyz while BgpPeers cannot be listed: %d %q, want 503 naming v1alpha2.BgpPeer", code, body)
	}
	if code, body := speakerGet(healthPort, "/healthz"); code != http.StatusOK {
		t.Errorf("speaker /healthz while BgpPeers cannot be listed: %d %q, want 200: a restart would not help", code, body)
	}
	// The same verdict for Prometheus (the OpenELBSpeakerNotReady alert).
	if _, body := speakerGet(healthPort, "/metrics"); !strings.Contains(body, "\nopenelb_speaker_ready 0\n") {
		t.Errorf("speaker /metrics while BgpPeers cannot be listed: want openelb_speaker_ready 0, have %q", grepLines(body, "openelb_speaker_ready"))
	}
	svc, err := l.cs.CoreV1().Services("default").Get(ctx, "nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a := ingressAddrs(svc); len(a) != 0 {
		t.Errorf("Service got %v while the provider cannot sync", a)
	}

	// Fix the object: both proceed, same processes.
	if out, err := l.cp.Kubectl(ctx, "patch", "bgppeer", "bad-peer", "--type=merge", "-p", `{"spec":{"conf":{"peerAs":65002}}}`); err != nil {
		t.Fatalf("fixing the BgpPeer: %v\n%s", err, out)
	}
	ccmPid, speakerPid := ccm.Pid(), speaker.Pid()
	if ips := l.waitIPs("default", "nginx", 1, time.Minute); ips[0].String() != "172.22.0.2" {
		t.Errorf("Service address %v, want 172.22.0.2", ips)
	}
	if code, body := waitHealthz(t, ccm, serviceReady, 30*time.Second); code != http.StatusOK || !strings.Contains(body, serviceReady) {
		t.Errorf("CCM /healthz?verbose=1 after the fix: %d %q, want 200 listing %q", code, body, serviceReady)
	}
	var code int
	var body string
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		code, body = speakerGet(healthPort, "/readyz")
		return code == http.StatusOK, nil
	})
	if code != http.StatusOK || body != "ok" {
		t.Errorf("speaker /readyz after the fix: %d %q, want 200 ok", code, body)
	}
	if _, body := speakerGet(healthPort, "/metrics"); !strings.Contains(body, "\nopenelb_speaker_ready 1\n") {
		t.Errorf("speaker /metrics after the fix: want openelb_speaker_ready 1, have %q", grepLines(body, "openelb_speaker_ready"))
	}
	if ccm.Exited() || speaker.Exited() || ccm.Pid() != ccmPid || speaker.Pid() != speakerPid {
		t.Errorf("a process was restarted: CCM exited=%v, speaker exited=%v", ccm.Exited(), speaker.Exited())
	}
	if !ccm.LogContains("Provider ready: every held address re-adopted") {
		t.Error("the CCM never logged that the provider is ready")
	}
}

// storeBadPeer writes BgpPeer name with peerAs -1 into etcd and checks the
// typed client indeed cannot decode it.
func storeBadPeer(t *testing.T, l *lab, name string) {
	t.Helper()
	ctx := context.Background()
	obj := map[string]any{
		"apiVersion": v1alpha2.SchemeGroupVersion.String(),
		"kind":       "BgpPeer",
		"metadata": map[string]any{
			"name": name, "uid": string(uuid.NewUUID()), "generation": 1,
			"creationTimestamp": time.Now().UTC().Format(time.RFC3339),
		},
		"spec": map[string]any{"conf": map[string]any{"peerAs": -1, "neighborAddress": "192.0.2.1"}},
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("/registry/%s/bgppeers/%s", v1alpha2.SchemeGroupVersion.Group, name)
	if err := l.cp.EtcdPut(ctx, key, raw); err != nil {
		t.Fatal(err)
	}
	var bp v1alpha2.BgpPeer
	err = l.crd.Get(ctx, client.ObjectKey{Name: name}, &bp)
	if err == nil || !strings.Contains(err.Error(), "cannot unmarshal number -1") {
		t.Fatalf("reading the stored BgpPeer: %v, want a decoding error", err)
	}
}

// startHealthSpeaker runs openelb-speaker for node with its health endpoint
// on a free loopback port.
func startHealthSpeaker(t *testing.T, l *lab, node string) (*harness.Component, int) {
	t.Helper()
	bin, err := harness.ProjectBinary("openelb-speaker")
	if err != nil {
		t.Fatal(err)
	}
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd, args, err := harness.SpeakerCommand(bin, "--kubeconfig="+l.cp.Kubeconfig, "--node-name="+node,
		fmt.Sprintf("--health-address=127.0.0.1:%d", port), "--v=2")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := l.cp.StartComponent("speaker-"+node, cmd, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- speaker %s log tail ---\n%s", node, sp.LogTail(30))
		}
		_ = sp.Stop()
	})
	return sp, port
}

// speakerGet GETs path on a speaker's health port: status code and body,
// code 0 when the request failed.
func speakerGet(port int, path string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// waitLogLine waits up to a minute for a line of c's log holding every
// one of parts.
func waitLogLine(t *testing.T, c *harness.Component, parts ...string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return hasLogLine(c.LogPath(), parts), nil
	})
	if err != nil {
		t.Errorf("no line of %s holds all of %q", c.LogPath(), parts)
	}
}

// hasLogLine reports whether a line of the log at path holds every part.
func hasLogLine(path string, parts []string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
