package agent

import (
	"context"
	"net/netip"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// poolCampaign is one campaign for a pool's Lease, the election.Leadership
// of that pool; callbacks of a campaign that was stopped are ignored.
type poolCampaign struct {
	m      *layer2Manager
	st     *poolState
	cancel context.CancelFunc
}

// Started and Ended are the election's calls (election.Leadership); the
// manager checks, under its lock, that they are for the current campaign.
func (c *poolCampaign) Started(ctx context.Context, t *election.Term) { c.m.started(ctx, c, t) }
func (c *poolCampaign) Ended(t *election.Term)                        { c.m.ended(c, t) }

// leaseCache serves the election's Lease reads from the agent's cache,
// whose Lease informer covers the speaker's namespace only. Its errors go
// out as they are: the elector creates a Lease on NotFound.
type leaseCache struct {
	reader client.Reader
}

// Get reads the Lease from the cache: no API request.
func (c leaseCache) Get(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	var l coordinationv1.Lease
	if err := c.reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// startCampaignLocked makes the node compete for the pool's Lease, to
// answer on is. The Lease it may create is owned by the pool's Eip, read
// when it is created, since the Eip can come or go while the campaign runs.
func (m *layer2Manager) startCampaignLocked(ctx context.Context, st *poolState, is *ifaceState) {
	cctx, cancel := context.WithCancel(ctx)
	c := &poolCampaign{m: m, st: st, cancel: cancel}
	st.iface, st.campaign = is, c
	pool := st.spec.Name
	cand := election.Candidate{
		Store: m.leases, Namespace: m.namespace, Name: election.LeaseName(pool), Identity: m.node,
		Timings: m.opts.Lease,
		Meta: func() metav1.ObjectMeta {
			om := metav1.ObjectMeta{
				Labels:      map[string]string{"app.kubernetes.io/managed-by": "openelb-speaker", "app.kubernetes.io/component": "layer2-election"},
				Annotations: map[string]string{"openelb.kubesphere.io/eip": pool},
			}
			m.mu.Lock()
			uid := st.spec.EipUID
			m.mu.Unlock()
			if uid != "" {
				// The Lease goes when its Eip does (garbage collector).
				om.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1alpha2.SchemeGroupVersion.String(), Kind: "Eip", Name: pool, UID: uid}}
			}
			return om
		},
	}
	metricL2Leader.WithLabelValues(pool).Set(0)
	klog.FromContext(ctx).Info("Competing for a layer-2 pool", "pool", pool, "lease", cand.Describe(), "interface", is.name)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		election.Campaign(cctx, cand, c)
	}()
}

// stopCompetingLocked stops answering for the pool (at the next
// applyLocked, which every caller runs before releasing mu, and so before
// the campaign can release the Lease) and ends the campaign.
func (m *layer2Manager) stopCompetingLocked(st *poolState) {
	if st.campaign == nil {
		return
	}
	if st.term != nil {
		m.endTermLocked(st)
	}
	st.campaign.cancel()
	st.campaign, st.iface = nil, nil
	metricL2Leader.DeleteLabelValues(st.spec.Name)
}

func (m *layer2Manager) endTermLocked(st *poolState) {
	st.lastEnded, st.term = st.term, nil
	st.endTerm()
	st.chosen, st.announced = nil, nil
	metricL2Leader.WithLabelValues(st.spec.Name).Set(0)
	metricL2Transitions.WithLabelValues(st.spec.Name).Inc()
}

// started makes the node answer for the pool, unless the term ended (or
// the campaign was stopped) before this callback ran.
func (m *layer2Manager) started(ctx context.Context, c *poolCampaign, t *election.Term) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := c.st
	if m.closed || st.campaign != c || st.lastEnded == t || st.term != nil || ctx.Err() != nil {
		return
	}
	st.term = t
	st.termCtx, st.endTerm = context.WithCancel(ctx)
	st.chosen, st.announced = map[netip.Addr]chosenMAC{}, map[netip.Addr]string{}
	metricL2Leader.WithLabelValues(st.spec.Name).Set(1)
	metricL2Transitions.WithLabelValues(st.spec.Name).Inc()
	m.log.Info("Answering for a layer-2 pool", "pool", st.spec.Name, "interface", st.iface.name, "addresses", len(st.spec.Addrs))
	m.applyLocked()
	m.refreshStatusLocked()
}

// ended stops answering for the pool. It runs before the Lease is
// released and again when client-go reports the end.
func (m *layer2Manager) ended(c *poolCampaign, t *election.Term) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := c.st
	if st.campaign != c {
		return
	}
	if st.term != t {
		st.lastEnded = t
		return
	}
	m.endTermLocked(st)
	m.log.Info("Stopped answering for a layer-2 pool", "pool", st.spec.Name)
	m.applyLocked()
	m.refreshStatusLocked()
}
