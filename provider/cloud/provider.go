package cloud

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// ProviderName is the name given to --cloud-provider.
const ProviderName = "openelb"

// Options configure the provider.
type Options struct {
	// Connect builds the Cluster adapter from the REST config the framework
	// hands the provider once this replica leads. Required. It is called
	// again after an error (see start), in the background, possibly after
	// the process's shared informer factory started.
	Connect func(cfg *rest.Config) (Cluster, error)
	// RetryAfter is how long a Service waits before a retry when its pool
	// is missing, disabled or exhausted. Default 10s.
	RetryAfter time.Duration
	// PlanWorkers write LoadBalancerPlans concurrently. Default 4.
	PlanWorkers int
	// Reservations is how many addresses per pool the provider claims ahead
	// of demand, so a new Service's status is written without waiting for
	// its IPClaim (see reserve.go). Only safe when one replica allocates at
	// a time: the CCM sets it only with leader election on. 0 disables.
	Reservations int
	// Identity names this process in reserved claims. Default: hostname
	// and a random suffix.
	Identity string
	// ForeignGrace is how long reservations an earlier leader left unused
	// stay held before they are deleted: longer than the API server lets a
	// request run (--request-timeout, 1 minute by default), so a status
	// write that leader sent before it stopped has landed. Default 90s.
	ForeignGrace time.Duration
	// Classes are the Services served (default: class-less ones and
	// LoadBalancerClass).
	Classes Classes
}

// Provider is the "openelb" cloudprovider.Interface.
type Provider struct {
	opts Options

	cluster Cluster
	alloc   *ipam.Allocator
	// ready is set once every address already held (IPClaims and Service
	// status) is re-adopted; nothing is allocated before.
	ready atomic.Bool

	pools atomic.Pointer[poolSet]

	mu sync.Mutex
	// confirmed holds the addresses of each Service whose IPClaims the API
	// server accepted; only those are published in plans and status.
	confirmed map[ipam.ServiceKey][]netip.Addr
	// created remembers plans created but maybe not yet in the cache.
	created map[string]*v1alpha2.LoadBalancerPlanSpec

	planQueue  workqueue.TypedRateLimitingInterface[string]
	poolsDirty chan struct{}
	// nodeSeen is what planning last saw of each node; only a change of
	// it (labels, readiness, addresses, deletion) re-plans Services, not
	// every status heartbeat.
	nodeSeen map[string]string

	// selectorKeys counts, per node label key, the pools and Services whose
	// BGP node selector reads it; selectorKeysOf is each one's keys
	// (noteSelectorKeys).
	selectorKeys   map[string]int
	selectorKeysOf map[string][]string
	// drainSince is when each draining node was first seen draining (for
	// the graceful-shutdown delay); guarded by mu.
	drainSince map[string]time.Time
	// supportDirty asks supportLoop for a pass over the BgpConfs and
	// BgpPeers.
	supportDirty chan struct{}
	// racksDirty asks rackLoop for a pass over the racks.
	racksDirty  chan struct{}
	statusDirty chan struct{}

	// identity names this process in its reserved claims.
	identity string
	// after holds work waiting for a Service's status write (binds of
	// reserved claims, the allocation event); see afterStatus.
	after     map[ipam.ServiceKey]*afterStatus
	afterKick chan struct{}
	reserving map[netip.Addr]chan struct{} // reservations whose claim is being created
	lastAlloc time.Time
	foreign   map[netip.Addr]foreignHold
	// resvByClaim and resvBySvc index the admins' reservations for
	// Services (IPClaim spec.reservedFor) by claim and by Service.
	resvByClaim  map[string]reservation
	resvBySvc    map[ipam.ServiceKey][]netip.Addr
	reserveDirty chan struct{}
	keyMu        [keyLockStripes]sync.Mutex

	lb        *LoadBalancer
	instances *Instances
}

var _ cloudprovider.Interface = (*Provider)(nil)

// New returns the provider. It does nothing until Initialize.
func New(opts Options) (*Provider, error) {
	if opts.Connect == nil {
		return nil, errors.New("cloud.Options.Connect is required")
	}
	RegisterMetrics()
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 10 * time.Second
	}
	if opts.PlanWorkers <= 0 {
		opts.PlanWorkers = 4
	}
	if opts.Identity == "" {
		opts.Identity = newIdentity()
	}
	if opts.ForeignGrace <= 0 {
		opts.ForeignGrace = DefaultForeignGrace
	}
	p := &Provider{
		opts:         opts,
		alloc:        ipam.New(),
		confirmed:    map[ipam.ServiceKey][]netip.Addr{},
		created:      map[string]*v1alpha2.LoadBalancerPlanSpec{},
		poolsDirty:   make(chan struct{}, 1),
		nodeSeen:     map[string]string{},
		racksDirty:   make(chan struct{}, 1),
		supportDirty: make(chan struct{}, 1),
		selectorKeys: map[string]int{}, selectorKeysOf: map[string][]string{}, drainSince: map[string]time.Time{},
		statusDirty:  make(chan struct{}, 1),
		identity:     opts.Identity,
		after:        map[ipam.ServiceKey]*afterStatus{},
		foreign:      map[netip.Addr]foreignHold{},
		resvByClaim:  map[string]reservation{},
		resvBySvc:    map[ipam.ServiceKey][]netip.Addr{},
		reserveDirty: make(chan struct{}, 1),
		afterKick:    make(chan struct{}, 1),
		reserving:    map[netip.Addr]chan struct{}{},
		planQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "openelb_plans"},
		),
	}
	p.pools.Store(&poolSet{byName: map[string]*pool{}})
	p.lb = &LoadBalancer{p: p}
	p.instances = &Instances{p: p}
	return p, nil
}

// ReadConfig accepts the --cloud-config file. The provider has no settings
// there yet; an empty or absent file is fine and anything else is refused
// so a misplaced configuration is not silently ignored.
func ReadConfig(r io.Reader) error {
	if r == nil {
		return nil
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading cloud config: %w", err)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		return errors.New("the openelb provider takes no --cloud-config settings; configure it with Eip, BgpConf and BgpPeer objects")
	}
	return nil
}

// Initialize is called by the framework on the leader, before the
// controllers start. It starts the provider in the background (see start);
// LoadBalancer calls return a RetryError until it is ready.
func (p *Provider) Initialize(clientBuilder cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-stop
		cancel()
	}()
	logger := klog.FromContext(ctx).WithName("openelb")
	ctx = klog.NewContext(ctx, logger)
	go func() {
		if err := p.start(ctx, clientBuilder); err != nil {
			logger.Info("Provider start abandoned: this replica is stopping", "err", err)
		}
	}()
}

// start connects to the cluster, waits for the caches, loads the pools and
// re-adopts every held address, then runs the provider's loops. It returns
// once ready, or with ctx's error.
//
// Every step is retried in this process, with back-off (retryStep), until
// it succeeds, however long that takes; the cache sync waits while a kind
// cannot be listed, naming it in the log. Exiting so the Deployment
// restarts the process was the alternative, rejected: what keeps a step
// from succeeding (an API server unreachable, a CRD not installed yet, a
// stored object that no longer decodes) lies outside the process, so a new
// one would fail the same way, only later (the restart back-off grows to
// five minutes) and with the CCM's other controllers, node initialization
// among them, stopped meanwhile. Until start is done Ready is false, so the
// service controller's health check fails and the log says which step
// retries and why.
func (p *Provider) start(ctx context.Context, clientBuilder cloudprovider.ControllerClientBuilder) error {
	logger := klog.FromContext(ctx)
	if err := retryStep(ctx, "Cannot connect to the cluster", func() error { return p.connect(clientBuilder) }); err != nil {
		return err
	}
	handlers := Handlers{
		Eip:           func(string) { signal(p.poolsDirty) },
		Claim:         func(name string) { p.claimChanged(ctx, name) },
		Plan:          p.planQueue.Add,
		Service:       p.planQueue.Add,
		EndpointSlice: p.planQueue.Add,
		BgpPeer:       func(string) { signal(p.racksDirty); signal(p.supportDirty) },
		BgpConf:       func(string) { signal(p.supportDirty); signal(p.racksDirty) },
		Rack:          func(string) { signal(p.racksDirty) },
		Node:          func(name string) { p.nodeChanged(ctx, name) },
	}
	if err := retryStep(ctx, "Cannot start the informer caches", func() error { return p.cluster.Start(ctx, handlers) }); err != nil {
		return err
	}
	if err := retryStep(ctx, "Loading the pools failed", func() error {
		_, err := p.syncPools(ctx)
		return err
	}); err != nil {
		return err
	}
	// Allocating before every held address is known could hand out a
	// duplicate: nothing is served until this succeeds.
	if err := retryStep(ctx, "Re-adopting held addresses failed", func() error { return p.adopt(ctx) }); err != nil {
		return err
	}
	p.ready.Store(true)
	logger.Info("Provider ready: every held address re-adopted")
	signal(p.statusDirty)

	go p.poolLoop(ctx)
	go p.rackLoop(ctx)
	go p.supportLoop(ctx)
	signal(p.supportDirty)
	signal(p.racksDirty)
	go p.statusLoop(ctx)
	go p.afterLoop(ctx)
	if p.opts.Reservations > 0 {
		go p.reserveLoop(ctx)
	}
	for i := 0; i < p.opts.PlanWorkers; i++ {
		go p.planWorker(ctx)
	}
	go func() {
		<-ctx.Done()
		p.planQueue.ShutDown()
	}()
	return nil
}

// connect builds the provider's client config and its Cluster.
func (p *Provider) connect(clientBuilder cloudprovider.ControllerClientBuilder) error {
	cfg, err := clientBuilder.Config("openelb-provider")
	if err != nil {
		return fmt.Errorf("building the provider's client config: %w", err)
	}
	cluster, err := p.opts.Connect(cfg)
	if err != nil {
		return err
	}
	p.cluster = cluster
	return nil
}

// startBackoff spaces the attempts of a start step: a passing failure costs
// a second, a lasting one a log line every 30 seconds.
var startBackoff = wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: 30 * time.Second}

// retryStep runs step until it succeeds or ctx ends (its error then),
// logging each failure with msg.
func retryStep(ctx context.Context, msg string, step func() error) error {
	backoff := startBackoff
	for attempt := 1; ; attempt++ {
		err := step()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay := backoff.Step()
		klog.FromContext(ctx).Error(err, msg+"; retrying", "attempt", attempt, "retryIn", delay.Round(100*time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// Ready tells whether the provider serves LoadBalancer calls: it connected
// to the cluster, its caches synced and it re-adopted every address already
// held. Until then those calls return a RetryError and the service
// controller's health check fails; start retries whatever holds it back
// and logs why.
func (p *Provider) Ready() bool { return p.ready.Load() }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// LoadBalancer returns the LoadBalancer implementation.
func (p *Provider) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return p.lb, true }

// Instances is not implemented: InstancesV2 replaces it.
func (p *Provider) Instances() (cloudprovider.Instances, bool) { return nil, false }

// InstancesV2 returns the minimal bare-metal instances implementation.
func (p *Provider) InstancesV2() (cloudprovider.InstancesV2, bool) { return p.instances, true }

// Zones is not implemented (deprecated by the framework).
func (p *Provider) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not implemented.
func (p *Provider) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes is not implemented: pod networking is the CNI's job on bare metal.
func (p *Provider) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName returns "openelb".
func (p *Provider) ProviderName() string { return ProviderName }

// HasClusterID is true: addresses are cluster-local, no tagging needed.
func (p *Provider) HasClusterID() bool { return true }

func (p *Provider) setConfirmed(key ipam.ServiceKey, addrs []netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(addrs) == 0 {
		delete(p.confirmed, key)
		return
	}
	p.confirmed[key] = addrs
}

func (p *Provider) confirmedAddrs(key ipam.ServiceKey) []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirmed[key]
}

// retryNotReady is how soon a Service is retried while the provider is
// still re-adopting held addresses (normally well under a second).
const retryNotReady = 500 * time.Millisecond

// nodeChanged queues a rack pass when something planning reads of the node
// changed; a status heartbeat alone changes nothing.
func (p *Provider) nodeChanged(ctx context.Context, name string) {
	seen := ""
	if n, err := p.cluster.Node(ctx, name); err == nil {
		// Every taint key counts: the BgpConf may name any as a drain.
		seen = fmt.Sprintf("%+v", plannerNode(n, nil))
		for _, t := range n.Spec.Taints {
			seen += " " + t.Key
		}
	}
	p.mu.Lock()
	old, known := p.nodeSeen[name]
	if seen == "" {
		delete(p.nodeSeen, name)
	} else {
		p.nodeSeen[name] = seen
	}
	p.mu.Unlock()
	if known && old == seen {
		return
	}
	signal(p.racksDirty)
}
