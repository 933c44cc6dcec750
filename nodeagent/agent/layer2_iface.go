package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
)

// ifaceState is one interface the node answers on, shared by its pools.
type ifaceState struct {
	name  string
	index int
	mac   net.HardwareAddr
	r     *layer2.Responder
	stop  context.CancelFunc
	// answers last given to SetAnswers, and what it refused.
	answers  map[netip.Addr]string
	rejected map[netip.Addr]error
	stats    layer2.Stats
}

// target is where a pool would be answered on this node, or why not.
type target struct {
	ifi          *net.Interface
	ifname       string // the resolved interface, also when it cannot serve
	problem      l2Problem
	addrProblems map[netip.Addr]error
}

// resolveTarget finds the pool's interface on this node: the first of its
// interfaces (patterns expanded in name order) that is up and carries the
// subnet of at least one of the pool's addresses. When none does, the
// problem is that of the first interface that resolved (its addresses are
// outside its subnets), or else why the first entry did not resolve.
func resolveTarget(p *l2Pool) target {
	if len(p.Interfaces) == 0 {
		return target{problem: l2Problem{Reason: ReasonNoInterface, Message: fmt.Sprintf("Eip %s names no interface", p.Eip)}}
	}
	var first *target
	for _, spec := range p.Interfaces {
		for _, name := range expandInterface(spec) {
			t := tryInterface(p, spec, name)
			if t.ifi != nil {
				return t
			}
			if first == nil || (first.ifname == "" && t.ifname != "") {
				first = &t
			}
		}
	}
	return *first
}

// expandInterface turns one entry into the interface specs to try: a
// pattern into the matching interface names (sorted), anything else as it
// is (a pattern matching nothing stays itself, so its error names it).
func expandInterface(spec string) []string {
	if strings.HasPrefix(spec, v1alpha2.CanReachPrefix) || !strings.ContainsAny(spec, "*?[") {
		return []string{spec}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return []string{spec}
	}
	var out []string
	for _, ifi := range ifs {
		if ok, _ := filepath.Match(spec, ifi.Name); ok {
			out = append(out, ifi.Name)
		}
	}
	if len(out) == 0 {
		return []string{spec}
	}
	slices.Sort(out)
	return out
}

// tryInterface checks one interface for the pool.
func tryInterface(p *l2Pool, entry, spec string) target {
	ifi, err := layer2.ResolveInterface(spec)
	if err != nil {
		return target{problem: l2Problem{Reason: ReasonNoInterface, Message: fmt.Sprintf("interface %q of Eip %s: %v", entry, p.Eip, err)}}
	}
	prefixes, err := layer2.InterfacePrefixes(ifi)
	if err != nil {
		return target{problem: l2Problem{Reason: ReasonNoInterface, Message: err.Error()}}
	}
	t := target{ifi: ifi, ifname: ifi.Name}
	for _, a := range p.Addrs {
		if err := layer2.CheckAddr(a.IP, prefixes); err != nil {
			if t.addrProblems == nil {
				t.addrProblems = map[netip.Addr]error{}
			}
			t.addrProblems[a.IP] = err
		}
	}
	if len(t.addrProblems) == len(p.Addrs) {
		// Not one address can be answered here: do not become a
		// candidate where a node that can would own some.
		ips := make([]string, len(p.Addrs))
		for i, a := range p.Addrs {
			ips[i] = a.IP.String()
		}
		return target{ifname: ifi.Name, addrProblems: t.addrProblems, problem: l2Problem{Reason: ReasonOutsideSubnet,
			Message: fmt.Sprintf("the addresses of Eip %s (%s) are outside every subnet of interface %s %v", p.Eip, listed(ips, ", "), ifi.Name, prefixes)}}
	}
	return t
}

// interfacesChanged resolves the interfaces of the pools again and says
// whether any differs from what the node acts on (and feeds the metrics).
func (m *layer2Manager) interfacesChanged() bool {
	m.mu.Lock()
	m.statsLocked()
	specs := make([]*l2Pool, 0, len(m.pools))
	for _, st := range m.pools {
		specs = append(specs, st.spec)
	}
	m.mu.Unlock()
	targets := make(map[string]target, len(specs))
	for _, p := range specs {
		targets[p.Name] = resolveTarget(p)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, t := range targets {
		st := m.pools[name]
		if st == nil {
			continue
		}
		if st.ifname != t.ifname || st.problem != t.problem || len(st.addrProblems) != len(t.addrProblems) {
			return true
		}
		if t.ifi != nil && (st.iface == nil || st.iface.index != t.ifi.Index || st.iface.mac.String() != t.ifi.HardwareAddr.String()) {
			return true
		}
	}
	return false
}

func ifaceStillWanted(is *ifaceState, targets map[string]target) bool {
	for _, t := range targets {
		if t.ifi != nil && t.ifi.Name == is.name && t.ifi.Index == is.index && t.ifi.HardwareAddr.String() == is.mac.String() {
			return true
		}
	}
	return false
}

func (m *layer2Manager) usedLocked(is *ifaceState) bool {
	for _, st := range m.pools {
		if st.iface == is {
			return true
		}
	}
	return false
}

// ifaceLocked returns the running responder on ifi, opening one if needed.
func (m *layer2Manager) ifaceLocked(ctx context.Context, ifi *net.Interface) (*ifaceState, error) {
	if is := m.ifaces[ifi.Name]; is != nil {
		return is, nil
	}
	r, err := layer2.New(ifi, layer2.Options{
		Logger:           klog.FromContext(ctx).WithName("layer2"),
		AnnounceCount:    m.opts.AnnounceCount,
		AnnounceInterval: m.opts.AnnounceInterval,
	})
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(ctx)
	is := &ifaceState{name: ifi.Name, index: ifi.Index, mac: ifi.HardwareAddr, r: r, stop: stop}
	m.ifaces[ifi.Name] = is
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := r.Run(rctx)
		if err != nil {
			m.responderFailed(ctx, is, err)
		}
	}()
	klog.FromContext(ctx).Info("Layer-2 responder running", "interface", ifi.Name, "mac", ifi.HardwareAddr.String())
	return is, nil
}

// responderFailed stops competing on an interface whose socket broke and
// rebuilds it on a later reconcile.
func (m *layer2Manager) responderFailed(ctx context.Context, is *ifaceState, err error) {
	klog.FromContext(ctx).Error(err, "Layer-2 responder failed; rebuilding it", "interface", is.name)
	m.mu.Lock()
	if m.ifaces[is.name] == is {
		for _, st := range m.pools {
			if st.iface == is {
				m.stopCompetingLocked(st)
			}
		}
		m.applyLocked()
		m.closeIfaceLocked(is)
		delete(m.ifaces, is.name)
		m.refreshStatusLocked()
	}
	m.mu.Unlock()
	time.AfterFunc(time.Second, m.trigger)
}

func (m *layer2Manager) closeIfaceLocked(is *ifaceState) {
	is.stop()
	_ = is.r.Close()
	countStats(is.stats, is.r.Stats())
	is.stats = is.r.Stats()
}
