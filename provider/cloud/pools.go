package cloud

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// conditionInvalidBGP is the Eip condition of a spec.bgp value the
// speakers cannot announce (stored before the schema refused it).
const conditionInvalidBGP = ReasonInvalidBGPAttributes

// maxUsedEntries caps Eip.status.used so a large pool's status stays far
// below etcd's object size limit; IPClaims always hold the full list.
const maxUsedEntries = 1000

// pool is one Eip as the provider sees it after validation.
type pool struct {
	eip     *v1alpha2.Eip
	rng     ipam.RangeSet
	svcSel  ipam.Selector // nil: every Service
	problem string        // why the Eip serves no allocation ("" when it does)
	reason  string
	// deleting: the Eip has a deletionTimestamp. Its addresses stay held
	// and announced, none is handed out, and the eip-protection finalizer
	// is removed once no Service holds one.
	deleting bool
}

type poolSet struct {
	byName map[string]*pool
}

func (s *poolSet) get(name string) *pool { return s.byName[name] }

// fingerprint changes whenever anything allocation depends on changes: an
// Eip's spec (generation), its default annotation, or the set of Eips.
func (s *poolSet) fingerprint() string {
	names := make([]string, 0, len(s.byName))
	for n := range s.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		e := s.byName[n].eip
		fmt.Fprintf(&b, "%s/%s/%d/%t/%t;", n, e.UID, e.Generation, e.IsDefault(), e.DeletionTimestamp != nil)
	}
	return b.String()
}

// buildPools validates Eips into pools: an unparsable address, the
// unsupported vip protocol, or an overlap with an older Eip keeps an Eip out
// of allocation, with the reason kept for its status.
func buildPools(eips []*v1alpha2.Eip) *poolSet {
	set := &poolSet{byName: make(map[string]*pool, len(eips))}
	var valid []*pool
	for _, e := range eips {
		pl := &pool{eip: e, deleting: e.DeletionTimestamp != nil}
		set.byName[e.Name] = pl
		rng, err := eipRanges(&e.Spec)
		if err != nil {
			pl.problem, pl.reason = err.Error(), "InvalidAddress"
			continue
		}
		pl.rng = rng
		if ss := e.Spec.ServiceSelector; ss != nil {
			sel, err := metav1.LabelSelectorAsSelector(ss)
			if err != nil {
				pl.problem, pl.reason = fmt.Sprintf("spec.serviceSelector: %v", err), "InvalidServiceSelector"
				continue
			}
			pl.svcSel = labelSelector{sel}
		}
		if l2 := e.Spec.Layer2; l2 != nil {
			if _, err := metav1.LabelSelectorAsSelector(l2.NodeSelector); err != nil {
				pl.problem, pl.reason = fmt.Sprintf("spec.layer2.nodeSelector: %v", err), "InvalidNodeSelector"
				continue
			}
			if _, err := metav1.LabelSelectorAsSelector(l2.PreferredNodeSelector); err != nil {
				pl.problem, pl.reason = fmt.Sprintf("spec.layer2.preferredNodeSelector: %v", err), "InvalidNodeSelector"
				continue
			}
		}
		if e.EffectiveProtocol() == v1alpha2.ProtocolVIP {
			pl.problem, pl.reason = "protocol vip is accepted for OpenELB compatibility but not supported by this provider; use bgp or layer2", "UnsupportedProtocol"
			continue
		}
		valid = append(valid, pl)
	}
	// The older Eip keeps an overlapping range: the newer one is the mistake.
	sort.Slice(valid, func(i, j int) bool {
		a, b := valid[i].eip, valid[j].eip
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	var kept []*pool
	for _, pl := range valid {
		for _, k := range kept {
			if pl.rng.Overlaps(k.rng) {
				pl.problem, pl.reason = fmt.Sprintf("address %s overlaps Eip %q (%s)", describeAddresses(&pl.eip.Spec), k.eip.Name, describeAddresses(&k.eip.Spec)), "Overlap"
				break
			}
		}
		if pl.problem == "" {
			kept = append(kept, pl)
		}
	}
	return set
}

// eipRanges is the address space of an Eip: spec.address and every entry
// of spec.ranges, less the edges of each CIDR with skipNetworkAndBroadcast,
// as one RangeSet. An entry the schema let through but the allocator
// refuses (stored before the schema checked it), special-purpose
// addresses, two families or overlapping entries are an error naming the
// field.
func eipRanges(spec *v1alpha2.EipSpec) (ipam.RangeSet, error) {
	var rs []ipam.Range
	add := func(field string, s v1alpha2.AddressRange) error {
		r, err := ipam.ParseRange(string(s))
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if spec.SkipNetworkAndBroadcast {
			r = ipam.SkipEdges(string(s), r)
		}
		if err := ipam.CheckUsableRange(r); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		rs = append(rs, r)
		return nil
	}
	if spec.Address != "" {
		if err := add("spec.address", spec.Address); err != nil {
			return nil, err
		}
	}
	for i, s := range spec.Ranges {
		if err := add(fmt.Sprintf("spec.ranges[%d]", i), s); err != nil {
			return nil, err
		}
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("spec.address or spec.ranges is required")
	}
	set, err := ipam.NewRangeSet(rs...)
	if err != nil {
		return nil, fmt.Errorf("spec.address and spec.ranges: %w", err)
	}
	return set, nil
}

// describeAddresses spells an Eip's addresses as its spec writes them, for
// messages: "10.0.0.0/24" or "10.0.0.0/24 + [10.0.5.1-10.0.5.9]".
func describeAddresses(spec *v1alpha2.EipSpec) string {
	parts := make([]string, len(spec.Ranges))
	for i, r := range spec.Ranges {
		parts[i] = string(r)
	}
	switch {
	case len(parts) == 0:
		return string(spec.Address)
	case spec.Address == "":
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprintf("%s + [%s]", spec.Address, strings.Join(parts, ", "))
}

func (s *poolSet) ipamPools() []ipam.Pool {
	var out []ipam.Pool
	for _, pl := range s.byName {
		if pl.problem != "" {
			continue
		}
		e := pl.eip
		out = append(out, ipam.Pool{
			Name:              e.Name,
			Ranges:            pl.rng,
			Disabled:          e.Spec.Disable || pl.deleting,
			Priority:          e.Spec.Priority,
			Default:           e.IsDefault(),
			Namespaces:        e.Spec.Namespaces,
			NamespaceSelector: e.Spec.NamespaceSelector,
			AllowAnyNamespace: e.Spec.AllowAnyNamespace,
			ServiceSelector:   pl.svcSel,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// syncPools loads the Eips into the allocator and reports whether anything
// allocation depends on changed.
func (p *Provider) syncPools(ctx context.Context) (bool, error) {
	eips, err := p.cluster.Eips(ctx)
	if err != nil {
		return false, err
	}
	set := buildPools(eips)
	if old := p.pools.Load(); old != nil && old.fingerprint() == set.fingerprint() {
		// Only statuses changed (mostly our own writes): keep the
		// allocator's pools, refresh the objects the status loop compares.
		p.pools.Store(set)
		return false, nil
	}
	if err := p.alloc.SetPools(set.ipamPools()); err != nil {
		// buildPools already removed what SetPools refuses; anything left is
		// reported, never silently dropped.
		klog.FromContext(ctx).Error(err, "Allocator refused some pools")
	}
	p.pools.Store(set)
	return true, nil
}

func (p *Provider) poolLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.poolsDirty:
		}
		changed, err := p.syncPools(ctx)
		if err != nil {
			klog.FromContext(ctx).Error(err, "Reloading pools failed")
			time.AfterFunc(time.Second, func() { signal(p.poolsDirty) })
			continue
		}
		if !changed {
			continue
		}
		signal(p.statusDirty)
		signal(p.reserveDirty)
		// A pool's protocol or interface is part of every plan it serves.
		p.mu.Lock()
		for key := range p.confirmed {
			p.planQueue.Add(string(key))
		}
		p.mu.Unlock()
	}
}

// statusLoop keeps Eip status true. Changes are coalesced: one pass at most
// every 250ms writes only the Eips whose status differs, so a burst of
// allocations costs a handful of writes, not one per Service.
func (p *Provider) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.statusDirty:
		}
		if err := p.writeEipStatuses(ctx); err != nil {
			klog.FromContext(ctx).V(2).Info("Eip status update failed; retrying", "err", err)
			time.AfterFunc(time.Second, func() { signal(p.statusDirty) })
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (p *Provider) writeEipStatuses(ctx context.Context) error {
	set := p.pools.Load()
	var firstErr error
	usage := make(poolUsage, len(set.byName)) // the pool metrics (metrics.go)
	defer usage.publish()
	for _, pl := range set.byName {
		want := p.eipStatus(pl)
		usage.observe(pl, &want)
		if err := p.syncEipFinalizer(ctx, pl); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if statusEqual(&pl.eip.Status, &want) {
			continue
		}
		if c := meta.FindStatusCondition(want.Conditions, "Ready"); c != nil && c.Reason == reasonDeleting {
			if old := meta.FindStatusCondition(pl.eip.Status.Conditions, "Ready"); old == nil || old.Reason != reasonDeleting {
				p.cluster.Event(pl.eip, v1.EventTypeWarning, "DeletionBlocked", c.Message)
			}
		}
		e := pl.eip.DeepCopy()
		e.Status = want
		if err := p.cluster.UpdateEipStatus(ctx, e); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("updating status of Eip %s: %w", e.Name, err)
			}
		}
	}
	return firstErr
}

// conditionOutside says addresses in use fell outside a shrunk range.
const conditionOutside = "AddressesOutsideRange"

// reasonDeleting is the Ready reason of an Eip kept by its finalizer.
const reasonDeleting = "Deleting"

// syncEipFinalizer keeps the eip-protection finalizer on every Eip and
// removes it from a deleted one once no Service holds its addresses.
// Deleting an Eip that Services use would otherwise stop announcing their
// addresses while the Services keep showing them: the finalizer makes the
// deletion wait, visibly (Ready=False, reason Deleting, and a
// DeletionBlocked event naming the holders), like a PersistentVolumeClaim
// in use.
func (p *Provider) syncEipFinalizer(ctx context.Context, pl *pool) error {
	e := pl.eip
	has := slices.Contains(e.Finalizers, v1alpha2.FinalizerEipProtection)
	var want []string
	switch {
	case !pl.deleting && !has:
		want = append(slices.Clone(e.Finalizers), v1alpha2.FinalizerEipProtection)
	case pl.deleting && has && len(pl.holders(p.alloc)) == 0:
		want = slices.DeleteFunc(slices.Clone(e.Finalizers), func(f string) bool { return f == v1alpha2.FinalizerEipProtection })
	default:
		return nil
	}
	if err := p.cluster.SetEipFinalizers(ctx, e, want); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("updating the finalizers of Eip %s: %w", e.Name, err)
	}
	return nil
}

// holders lists the addresses still held under the pool's name, in its
// range or outside it (it shrank under them).
func (pl *pool) holders(alloc *ipam.Allocator) []netip.Addr {
	stats, ok := alloc.Stats(pl.eip.Name)
	if !ok {
		return nil
	}
	out := make([]netip.Addr, 0, len(stats.Owners)+len(stats.Outside))
	for a := range stats.Owners {
		out = append(out, a)
	}
	out = append(out, stats.Outside...)
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// listAddrs prints at most ten addresses and how many more there are.
func listAddrs(addrs []netip.Addr) string {
	const show = 10
	parts := make([]string, 0, show+1)
	for i, a := range addrs {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(addrs)-show))
			break
		}
		parts = append(parts, a.String())
	}
	return strings.Join(parts, ", ")
}

func statusEqual(a, b *v1alpha2.EipStatus) bool {
	ac, bc := a.DeepCopy(), b.DeepCopy()
	for i := range ac.Conditions {
		ac.Conditions[i].LastTransitionTime = metav1.Time{}
	}
	for i := range bc.Conditions {
		bc.Conditions[i].LastTransitionTime = metav1.Time{}
	}
	return apiequality.Semantic.DeepEqual(ac, bc)
}

// eipStatus computes the status an Eip should have now.
func (p *Provider) eipStatus(pl *pool) v1alpha2.EipStatus {
	e := pl.eip
	st := v1alpha2.EipStatus{ObservedGeneration: e.Generation}
	conds := append([]metav1.Condition(nil), e.Status.Conditions...)
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&conds, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: e.Generation,
		})
	}
	if len(pl.rng) > 0 {
		st.FirstIP, st.LastIP = pl.rng.First().String(), pl.rng.Last().String()
		st.V4 = pl.rng.Family() == ipam.IPv4
		size := pl.rng.Size()
		if size > math.MaxInt64 {
			size = math.MaxInt64
		}
		st.PoolSize = int64(size)
	}
	if stats, ok := p.alloc.Stats(e.Name); ok {
		st.Usage = int(stats.Used)
		st.Occupied = stats.Size > 0 && stats.Used >= stats.Size
		addrs := make([]netip.Addr, 0, len(stats.Owners))
		for a := range stats.Owners {
			addrs = append(addrs, a)
		}
		sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
		if len(addrs) > 0 {
			st.Used = map[string]string{}
		}
		for i, a := range addrs {
			if i == maxUsedEntries {
				break
			}
			owners := make([]string, 0, len(stats.Owners[a]))
			for _, o := range stats.Owners[a] {
				owners = append(owners, string(o))
			}
			sort.Strings(owners)
			st.Used[a.String()] = strings.Join(owners, ",")
		}
		if len(addrs) > maxUsedEntries {
			set("UsedTruncated", metav1.ConditionTrue, "TooManyAddresses",
				fmt.Sprintf("status.used lists the first %d of %d addresses in use; kubectl get ipclaims lists all", maxUsedEntries, len(addrs)))
		} else {
			meta.RemoveStatusCondition(&conds, "UsedTruncated")
		}
		if len(stats.Outside) > 0 {
			set(conditionOutside, metav1.ConditionTrue, "RangeShrunk",
				fmt.Sprintf("%d addresses held by Services are outside spec.address and spec.ranges: %s; they stay the Services' and announced until released, and are never handed out again",
					len(stats.Outside), listAddrs(stats.Outside)))
		} else {
			meta.RemoveStatusCondition(&conds, conditionOutside)
		}
	}
	switch {
	case pl.problem != "":
		set("Ready", metav1.ConditionFalse, pl.reason, pl.problem)
	case pl.deleting:
		held := pl.holders(p.alloc)
		set("Ready", metav1.ConditionFalse, reasonDeleting,
			fmt.Sprintf("the Eip is being deleted but Services hold %d of its addresses (%s): they stay announced, no new address is handed out, and the Eip goes once they are released (delete those Services or give them other addresses)",
				len(held), listAddrs(held)))
	case e.Spec.Disable:
		st.Ready = true
		set("Ready", metav1.ConditionTrue, "Disabled", "pool is disabled: addresses already given stay, no new allocations")
	default:
		st.Ready = true
		set("Ready", metav1.ConditionTrue, "Serving", "pool serves allocations")
	}
	// Fields accepted and without effect: one Unsupported condition, its
	// reason the first of them, its message all of them.
	var unsupported [][2]string
	if e.EffectiveProtocol() == v1alpha2.ProtocolVIP {
		unsupported = append(unsupported, [2]string{"UnsupportedProtocol", pl.problem})
	}
	if e.Spec.UsingKnownIPs {
		unsupported = append(unsupported, [2]string{"UsingKnownIPs", "spec.usingKnownIPs is accepted for OpenELB compatibility and has no effect: addresses are not probed before use"})
	}
	if b := e.Spec.BGP; e.EffectiveProtocol() == v1alpha2.ProtocolLayer2 && b != nil && !(b.IsZero() && b.AggregationLength == 0 && b.AggregationLengthV6 == 0) {
		unsupported = append(unsupported, [2]string{"BGPOnLayer2", "spec.bgp has no effect on a layer2 pool: its addresses are answered by ARP/NDP, not announced over BGP"})
	}
	if e.Spec.Layer2 != nil && e.EffectiveProtocol() != v1alpha2.ProtocolLayer2 {
		unsupported = append(unsupported, [2]string{"Layer2OnBGP", "spec.layer2 has no effect on a bgp pool: choose its announcing nodes with spec.bgp.nodeSelector"})
	}
	if len(unsupported) > 0 {
		msgs := make([]string, len(unsupported))
		for i, u := range unsupported {
			msgs[i] = u[1]
		}
		set("Unsupported", metav1.ConditionTrue, unsupported[0][0], strings.Join(msgs, "; "))
	} else {
		meta.RemoveStatusCondition(&conds, "Unsupported")
	}
	var bad []string
	if e.Spec.BGP != nil {
		for _, err := range e.Spec.BGP.Validate("spec.bgp") { // attributes and aggregation lengths
			bad = append(bad, err.Error())
		}
	}
	if len(bad) > 0 {
		set(conditionInvalidBGP, metav1.ConditionTrue, conditionInvalidBGP,
			strings.Join(bad, "; ")+" (left out: the pool's addresses are announced without these values)")
	} else {
		meta.RemoveStatusCondition(&conds, conditionInvalidBGP)
	}
	if len(conds) > 0 {
		st.Conditions = conds
	}
	return st
}

// labelSelector is an Eip's spec.serviceSelector as the allocator matches it.
type labelSelector struct{ s labels.Selector }

func (l labelSelector) Matches(m map[string]string) bool { return l.s.Matches(labels.Set(m)) }
func (l labelSelector) String() string                   { return l.s.String() }
