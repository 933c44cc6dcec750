package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// Data-path health: a node that is Ready can still drop the Service traffic
// it receives, for as long as its kube-proxy is stopped, hung, or has not
// synced its rules in time; the kubelet does not notice. kube-proxy says so
// on its health check (port 10256, /healthz, bound to every address by
// default). Each speaker probes the nodes whose traffic it steers: the next
// hops of its rack, and itself for layer 2. A next hop whose check fails
// leaves the paths this speaker announces, within about two seconds and
// with no API request; the speaker answering a layer-2 pool lets another
// node take it over when its own check fails.
//
// Every speaker of a rack probes the same nodes and decides alone: the
// routers keep a next hop while any speaker still announces it, so the
// speakers agree within one probe interval. A node is judged only once its
// check answered 200 since the speaker started: nodes without kube-proxy
// (a cluster that replaced it) or whose health port is not reachable are
// never left out. When every next hop of the rack fails, none is left out
// (fail open): withdrawing the rack would only move its traffic onto racks
// that may be failing the same way, and kube-proxy's rules keep forwarding
// while it is down.
//
// Cost: one HTTP GET per probed node per interval from each speaker of its
// rack, on the rack's segment (the path the traffic takes), and a report
// write when a node's state changes.

// Defaults of the probe.
const (
	DefaultDataPathPort     = 10256
	DefaultDataPathPath     = "/healthz"
	DefaultDataPathInterval = time.Second
	// A killed kube-proxy refuses at once and a hung one times out: two
	// failed probes a second apart make a node unhealthy, two passing ones
	// healthy again, so one lost probe is not a route flap.
	dataPathFailAfter = 2
	dataPathOKAfter   = 2
)

// Data-path states of one probed node.
const (
	dataPathUnknown   = "Unknown" // never passed since the speaker started: not judged
	dataPathHealthy   = "Healthy"
	dataPathUnhealthy = "Unhealthy"
)

// DataPathOptions configure the probes.
type DataPathOptions struct {
	// Port of the health check on every node; 0 turns probing off.
	Port int
	// Path of the health check; empty: DefaultDataPathPath.
	Path string
	// Interval between probes of a node, each bounded by it too; 0:
	// DefaultDataPathInterval.
	Interval time.Duration
}

// nodeHealth is the state machine of one probed node, fed one probe
// result at a time.
type nodeHealth struct {
	state  string
	since  time.Time
	lastOK bool
	run    int    // probes in a row with the result lastOK
	msg    string // the last failure
	cause  string // the failure that made it unhealthy, kept for the report
}

// observe records one probe's result; it returns the state before and
// after.
func (h *nodeHealth) observe(err error, now time.Time) (from, to string) {
	ok := err == nil
	if ok != h.lastOK || h.run == 0 {
		h.lastOK, h.run = ok, 0
	}
	h.run++
	if !ok {
		h.msg = err.Error()
	}
	if h.state == "" {
		h.state = dataPathUnknown
	}
	from, to = h.state, h.state
	switch {
	case ok && h.state == dataPathUnknown:
		to = dataPathHealthy
	case ok && h.state == dataPathUnhealthy && h.run >= dataPathOKAfter:
		to = dataPathHealthy
	case !ok && h.state == dataPathHealthy && h.run >= dataPathFailAfter:
		to = dataPathUnhealthy
	}
	if to != from {
		h.state, h.since, h.cause = to, now, ""
		if to == dataPathUnhealthy {
			h.cause = h.msg
		}
	}
	return from, to
}

// probeTarget is one probed node.
type probeTarget struct {
	url    string
	cancel context.CancelFunc
	health nodeHealth
}

// dataPathProber probes the nodes it is given (setTargets) and says which
// are unhealthy.
type dataPathProber struct {
	opts    DataPathOptions
	client  *http.Client
	changed func() // called, outside mu, when a node's state changes

	mu      sync.Mutex
	ctx     context.Context // of start; nil before
	targets map[string]*probeTarget
	pending map[string]string // targets set before start
}

func newDataPathProber(opts DataPathOptions, changed func()) *dataPathProber {
	if opts.Path == "" {
		opts.Path = DefaultDataPathPath
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultDataPathInterval
	}
	return &dataPathProber{
		opts: opts, changed: changed, targets: map[string]*probeTarget{},
		client: &http.Client{Timeout: opts.Interval, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}},
	}
}

// enabled says whether anything is probed at all.
func (p *dataPathProber) enabled() bool { return p != nil && p.opts.Port > 0 }

// healthURL is the health check of a node reached at addr.
func (p *dataPathProber) healthURL(addr netip.Addr) string {
	return "http://" + net.JoinHostPort(addr.String(), strconv.Itoa(p.opts.Port)) + p.opts.Path
}

// start runs the probes until ctx ends.
func (p *dataPathProber) start(ctx context.Context) {
	if !p.enabled() {
		return
	}
	p.mu.Lock()
	p.ctx = ctx
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()
	if pending != nil {
		p.setTargets(pending)
	}
}

// setTargets makes the prober probe exactly these nodes (name → URL). A
// node kept with the same URL keeps its state; a new one starts Unknown.
func (p *dataPathProber) setTargets(want map[string]string) {
	if !p.enabled() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil {
		p.pending = want
		return
	}
	for name, t := range p.targets {
		if want[name] != t.url {
			t.cancel()
			delete(p.targets, name)
			metricDataPathHealthy.DeleteLabelValues(name)
		}
	}
	for name, url := range want {
		if _, ok := p.targets[name]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(p.ctx)
		t := &probeTarget{url: url, cancel: cancel, health: nodeHealth{state: dataPathUnknown, since: time.Now()}}
		p.targets[name] = t
		go p.probeLoop(ctx, name, t)
	}
}

// probeLoop probes one node until its ctx ends.
func (p *dataPathProber) probeLoop(ctx context.Context, node string, t *probeTarget) {
	logger := klog.FromContext(ctx).WithValues("probedNode", node, "url", t.url)
	tick := time.NewTicker(p.opts.Interval)
	defer tick.Stop()
	for {
		err := p.probe(ctx, t.url)
		p.mu.Lock()
		if ctx.Err() != nil {
			// Dropped by setTargets (under mu): its metric is gone too.
			p.mu.Unlock()
			return
		}
		from, to := t.health.observe(err, time.Now())
		if from != to {
			metricDataPathHealthy.WithLabelValues(node).Set(map[bool]float64{true: 1}[to == dataPathHealthy])
		}
		p.mu.Unlock()
		if from != to {
			if to == dataPathUnhealthy {
				logger.Info("Node's data path unhealthy (kube-proxy health check fails): left out of the next hops", "err", err)
			} else {
				logger.Info("Node's data path healthy", "was", from)
			}
			p.changed()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe asks a health check once.
func (p *dataPathProber) probe(ctx context.Context, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		// The URL is in the report already; keep the cause short.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// unhealthy returns the probed nodes judged unhealthy, with why.
func (p *dataPathProber) unhealthy() map[string]string {
	if !p.enabled() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]string{}
	for name, t := range p.targets {
		if t.health.state == dataPathUnhealthy {
			out[name] = t.health.cause
		}
	}
	return out
}

// status is the report's dataPath (nil when probing is off); failOpen says
// whether the last reconcile kept every next hop because all failed.
func (p *dataPathProber) status(failOpen bool) *v1alpha2.SpeakerDataPath {
	if !p.enabled() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &v1alpha2.SpeakerDataPath{Port: int32(p.opts.Port), Probed: int32(len(p.targets)), FailOpen: failOpen}
	for _, name := range slices.Sorted(maps.Keys(p.targets)) {
		h := p.targets[name].health
		if h.state == dataPathUnhealthy {
			since := metav1.NewTime(h.since.UTC().Truncate(time.Second))
			s.Unhealthy = append(s.Unhealthy, v1alpha2.SpeakerUnhealthyNode{Node: name, Message: h.cause, Since: &since})
		}
	}
	return s
}

// healthyRack returns rack without the next hops judged unhealthy (rack
// itself when none is, or when all are: fail open, see above), and
// whether it failed open. The cached object is never mutated.
func healthyRack(rack *v1alpha2.LoadBalancerRack, unhealthy map[string]string) (*v1alpha2.LoadBalancerRack, bool) {
	if rack == nil || len(unhealthy) == 0 {
		return rack, false
	}
	kept := make([]v1alpha2.RackNextHop, 0, len(rack.Spec.NextHops))
	for _, nh := range rack.Spec.NextHops {
		if _, bad := unhealthy[nh.Node]; !bad {
			kept = append(kept, nh)
		}
	}
	switch len(kept) {
	case len(rack.Spec.NextHops):
		return rack, false
	case 0:
		return rack, true
	}
	out := *rack
	out.Spec.NextHops = kept
	return &out, false
}

// probeTargets are the nodes a speaker probes: the next hops of its rack
// (when it speaks for it) and itself, each at its first address.
func (p *dataPathProber) probeTargets(self string, selfAddr netip.Addr, rack *v1alpha2.LoadBalancerRack) map[string]string {
	want := map[string]string{}
	if selfAddr.IsValid() {
		want[self] = p.healthURL(selfAddr)
	}
	if rack == nil || !slices.Contains(rack.Spec.Speakers, self) {
		return want
	}
	for _, nh := range rack.Spec.NextHops {
		for _, a := range nh.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				want[nh.Node] = p.healthURL(ip.Unmap())
				break
			}
		}
	}
	return want
}

// describeUnhealthy is a short list for log lines.
func describeUnhealthy(m map[string]string) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ",")
}
