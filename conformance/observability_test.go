package conformance

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// serviceReady is the line /healthz?verbose carries once the leader's
// service controller serves Services: its health check
// (provider/controller/health.go) passes. k8s.io/cloud-provider routes only
// /healthz itself on the secure port, not /healthz/<check> (404), so the
// check is read from the verbose listing.
const serviceReady = "[+]service-lb-controller ok"

// ccmGet GETs path on the CCM's secure port without a token (the harness
// allows /healthz and /metrics anonymously) and returns the status code and
// body; code 0 when the request failed.
func ccmGet(ccm *harness.Component, path string) (int, string) {
	// The CCM serves a self-signed certificate on loopback.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d%s", ccm.SecurePort, path))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHealthz polls /healthz?verbose=1 until it answers 200 and, if want
// is set, lists want; it returns the last answer.
func waitHealthz(t *testing.T, ccm *harness.Component, want string, timeout time.Duration) (int, string) {
	t.Helper()
	var code int
	var body string
	_ = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		code, body = ccmGet(ccm, "/healthz?verbose=1")
		return code == http.StatusOK && strings.Contains(body, want), nil
	})
	return code, body
}

// testHealthAndMetrics checks the CCM's /healthz, that it includes the
// service controller's check and that check passes (the caller saw the CCM
// give addresses), and that /metrics carries the provider's openelb_
// metrics next to the framework's.
func testHealthAndMetrics(t *testing.T, ccm *harness.Component) {
	if code, body := waitHealthz(t, ccm, "", 30*time.Second); code != http.StatusOK {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	// No wait: the CCM has served Services already, so the check passes.
	// (That it fails before, and is the controller's own check rather than
	// the framework's ping, is unit-tested in provider/controller.)
	if code, body := ccmGet(ccm, "/healthz?verbose=1"); code != http.StatusOK || !strings.Contains(body, serviceReady) {
		t.Errorf("/healthz?verbose=1 of a CCM serving Services: %d %q, want 200 listing %q", code, body, serviceReady)
	}
	code, body := ccmGet(ccm, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	for _, want := range []string{"openelb_ipam_events_total", "rest_client_requests_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
