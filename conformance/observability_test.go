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

// testHealthAndMetrics checks the CCM's /healthz and that /metrics carries
// the provider's openelb_ metrics next to the framework's.
func testHealthAndMetrics(t *testing.T, ccm *harness.Component) {
	// The CCM serves a self-signed certificate on loopback.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path string) (int, string) {
		resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d%s", ccm.SecurePort, path))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var code int
	var body string
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		code, body = get("/healthz")
		return code == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	code, body = get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	for _, want := range []string{"openelb_ipam_events_total", "rest_client_requests_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
