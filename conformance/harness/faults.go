package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Faults of the control plane itself, for the fault suite: etcd and
// kube-apiserver stopped and started again in place (same command line,
// so the same ports, serving certificate and data directory: clients
// reconnect to the address they know, as after a restart of a static pod),
// and etcd compacted. The restarted process replaces the old one in the
// control plane, so Stop still reaps it by PID.

// Restart says how a control-plane process is restarted.
type Restart struct {
	// Kill stops it with SIGKILL, a crash; otherwise SIGTERM, a graceful
	// shutdown (SIGKILL after 5 s).
	Kill bool
	// Down is how long it stays stopped before it starts again.
	Down time.Duration
}

// RestartTimes are the moments of a restart.
type RestartTimes struct {
	Stopping time.Time // the signal was sent
	Stopped  time.Time // the old process had exited
	Ready    time.Time // the new one answered its readiness check
}

// RestartAPIServer stops kube-apiserver and starts it again on the same
// port with the same serving certificate and flags, waiting until /readyz
// passes.
func (c *ControlPlane) RestartAPIServer(ctx context.Context, r Restart) (RestartTimes, error) {
	return c.restart(ctx, APIServer, r)
}

// RestartEtcd stops etcd and starts it again on the same ports and data
// directory, waiting until /health passes.
func (c *ControlPlane) RestartEtcd(ctx context.Context, r Restart) (RestartTimes, error) {
	return c.restart(ctx, Etcd, r)
}

func (c *ControlPlane) restart(ctx context.Context, component string, r Restart) (RestartTimes, error) {
	var t RestartTimes
	t.Stopping = time.Now()
	stopped, err := c.StopProcess(component, r.Kill)
	if err != nil {
		return t, err
	}
	t.Stopped = stopped
	select {
	case <-ctx.Done():
		return t, ctx.Err()
	case <-time.After(r.Down):
	}
	t.Ready, err = c.StartProcessAgain(ctx, component)
	return t, err
}

// StopProcess stops a running control-plane process (Etcd or APIServer;
// kill: SIGKILL, else SIGTERM then SIGKILL after 5 s) and returns when it
// had exited. StartProcessAgain brings it back.
func (c *ControlPlane) StopProcess(component string, kill bool) (time.Time, error) {
	p, _, err := c.findProcess(component)
	if err != nil {
		return time.Time{}, err
	}
	if p.exited() {
		return time.Time{}, fmt.Errorf("%s (pid %d) is not running", component, p.pid())
	}
	if kill {
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
	if err := p.stop(stopGrace); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// StartProcessAgain starts a stopped control-plane process (Etcd or
// APIServer) with its previous command line and log, replaces the old one
// in the control plane, and returns once it is ready.
func (c *ControlPlane) StartProcessAgain(ctx context.Context, component string) (time.Time, error) {
	check, timeout, err := c.readiness(component)
	if err != nil {
		return time.Time{}, err
	}
	old, i, err := c.findProcess(component)
	if err != nil {
		return time.Time{}, err
	}
	if !old.exited() {
		return time.Time{}, fmt.Errorf("%s (pid %d) is still running", component, old.pid())
	}
	p, err := startProcess(old.name, old.cmd.Path, old.cmd.Args[1:], old.logPath)
	if err != nil {
		return time.Time{}, err
	}
	c.mu.Lock()
	c.procs[i] = p
	c.mu.Unlock()
	if err := waitFor(ctx, p, timeout, check); err != nil {
		return time.Time{}, fmt.Errorf("%s restarted: %w", component, err)
	}
	return time.Now(), nil
}

// findProcess returns the process of a component and its index in procs.
func (c *ControlPlane) findProcess(component string) (*process, int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, 0, fmt.Errorf("the control plane is stopped")
	}
	for i, p := range c.procs {
		if p.name == component {
			return p, i, nil
		}
	}
	return nil, 0, fmt.Errorf("no %s process in this control plane", component)
}

// readiness is the check a restarted component must pass, and how long
// it may take.
func (c *ControlPlane) readiness(component string) (func() error, time.Duration, error) {
	switch component {
	case Etcd:
		hc := &http.Client{Timeout: 2 * time.Second}
		return func() error { return etcdHealthy(hc, c.etcdURL) }, etcdReadyTimeout, nil
	case APIServer:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(c.caPEM) {
			return nil, 0, fmt.Errorf("no CA of the API server recorded")
		}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}
		return func() error { return apiServerReady(context.Background(), hc, c.APIServerURL, c.adminToken) }, apiServerReadyTimeout, nil
	}
	return nil, 0, fmt.Errorf("restarting %s is not supported (only %s and %s)", component, Etcd, APIServer)
}

func etcdHealthy(hc *http.Client, url string) error {
	resp, err := hc.Get(url + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return err
	}
	if h.Health != "true" {
		return fmt.Errorf("etcd health %q: %s", h.Health, h.Reason)
	}
	return nil
}

// apiServerReady asks the API server at url whether it is ready, as admin.
func apiServerReady(ctx context.Context, hc *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		return fmt.Errorf("/readyz: %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// CompactEtcd compacts etcd's key space at its current revision (the v3
// KV Compact call, physical: it returns once the old revisions are gone)
// and returns that revision. Afterwards any watch resumed from an earlier
// resource version that reaches etcd fails with "required revision has been
// compacted", which the API server passes on as "too old resource
// version"; so does its watch cache once it was rebuilt (an API server
// restart). The call goes through etcd's JSON gateway, as EtcdPut, so the
// module needs no etcd client.
func (c *ControlPlane) CompactEtcd(ctx context.Context) (int64, error) {
	rev, err := c.EtcdRevision(ctx)
	if err != nil {
		return 0, err
	}
	if err := c.etcdCall(ctx, "/v3/kv/compaction", map[string]any{"revision": strconv.FormatInt(rev, 10), "physical": true}, nil); err != nil {
		return 0, fmt.Errorf("etcd compaction at revision %d: %w", rev, err)
	}
	return rev, nil
}

// EtcdRevision is etcd's current revision (the resource version of the
// latest write through the API server).
func (c *ControlPlane) EtcdRevision(ctx context.Context) (int64, error) {
	var out struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	// A one-key range: its response header carries the store's revision.
	if err := c.etcdCall(ctx, "/v3/kv/range", map[string]any{"key": "AA==", "limit": "1", "keys_only": true}, &out); err != nil {
		return 0, fmt.Errorf("etcd revision: %w", err)
	}
	rev, err := strconv.ParseInt(out.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("etcd revision %q: %w", out.Header.Revision, err)
	}
	return rev, nil
}

// etcdCall posts a JSON request to etcd's gateway and decodes the answer
// into out (when not nil).
func (c *ControlPlane) etcdCall(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.etcdURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, raw)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}
