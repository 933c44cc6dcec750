package controller

import (
	"errors"
	"net/http"

	"k8s.io/cloud-provider/names"
	"k8s.io/controller-manager/controller"
	"k8s.io/controller-manager/pkg/healthz"
)

// The controller is what its init function hands the framework: the
// framework names its health check after Name and adds it to the leader's
// /healthz (listed as service-lb-controller by /healthz?verbose; the
// framework routes no per-check path on the secure port).
var (
	_ controller.Interface       = (*Controller)(nil)
	_ controller.HealthCheckable = (*Controller)(nil)
)

// Reasons the health check fails, in the order Check tests them.
var (
	// errProviderNotReady: the provider has not finished starting:
	// connecting, syncing its caches, loading the pools and re-adopting
	// every held address (normally well under a second after this replica
	// starts leading). If it lasts, a step keeps failing (the API server
	// is unreachable, a kind cannot be listed...) and the provider retries
	// it, logging which and why; the check fails meanwhile, so /healthz
	// reports a leader that serves no Service. The shipped liveness probe
	// excludes this check (a restart would not fix what the provider is
	// waiting for, and would stop node initialization); the readiness
	// probe includes it.
	errProviderNotReady = errors.New("provider not ready: still starting (connecting, syncing its caches or re-adopting held addresses; the CCM's log says which step is retrying and why)")
	errCacheNotSynced   = errors.New("the Service cache has not synced yet")
	errNotRunning       = errors.New("the service workers are not running")
)

// readiness is what a cloudprovider.LoadBalancer may offer to say it serves
// calls (the openelb provider's cloud.LoadBalancer does). One without it is
// taken as always ready: a RetryError is then the only signal, as in the
// framework's controller.
type readiness interface {
	Ready() bool
}

// Name is the framework's name for the slot this controller fills.
func (c *Controller) Name() string { return names.ServiceLBController }

// HealthChecker returns the controller itself: see Check.
func (c *Controller) HealthChecker() healthz.UnnamedHealthChecker { return c }

// Check passes once a Service created now would be served without waiting
// on a retry: the provider is ready, the Service informer has synced and
// the workers run. Before that it says which of the three is missing. It
// is cheap (three flag reads), as probes may call it often.
func (c *Controller) Check(*http.Request) error {
	if r, ok := c.lb.(readiness); ok && !r.Ready() {
		return errProviderNotReady
	}
	if !c.synced() {
		return errCacheNotSynced
	}
	if !c.running.Load() {
		return errNotRunning
	}
	return nil
}
