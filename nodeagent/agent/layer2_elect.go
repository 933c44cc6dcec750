package agent

import (
	"maps"
	"net/netip"

	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// electLocked decides which addresses this node answers: for every pool
// it is a candidate of, its view (itself and the live nodes whose Lease
// lists the pool), the addresses it owns under that view, and whether it
// may start answering them (election.Ready). It applies the answers that
// stop before its Lease says it acts on a new view, and those that start
// after; it asks for an early renewal when another node waits for one.
func (m *layer2Manager) electLocked() {
	own := m.own.State()
	if own.Epoch != m.epoch {
		// The Lease lapsed since: every hand-over starts afresh.
		m.epoch = own.Epoch
		for _, st := range m.pools {
			st.view, st.switchRV, st.ready = election.View{}, "", false
		}
	}
	peers, seenRV := m.peers.Live(), m.peers.SeenRV()
	ms := election.Membership{}
	var switched []*poolState
	for name, st := range m.pools {
		if st.iface == nil {
			continue
		}
		cands := []election.Candidate{{Node: m.node, Preferred: st.preferred}}
		for n, p := range peers {
			if a, ok := p.Pools[name]; ok {
				cands = append(cands, election.Candidate{Node: n, Preferred: a.Preferred})
			}
		}
		v := election.NewView(name, cands)
		if v.Hash != st.view.Hash || st.mine == nil {
			if v.Hash != st.view.Hash {
				st.view, st.switchRV, st.ready, st.waiting = v, "", false, nil
				switched = append(switched, st)
			}
			st.mine = map[netip.Addr]bool{}
			for _, a := range st.spec.Addrs {
				if st.addrProblems[a.IP] == nil && v.Owner(a.IP) == m.node {
					st.mine[a.IP] = true
				}
			}
		}
		ms[name] = election.PoolAck{View: v.Hash, Preferred: st.preferred}
	}
	// Stop first: what the node no longer owns, and everything while its
	// Lease is not live.
	for _, st := range m.pools {
		stopped := 0
		maps.DeleteFunc(st.answering, func(ip netip.Addr, _ bool) bool {
			stop := !own.Live || st.iface == nil || !st.mine[ip]
			if stop {
				stopped++
				metricL2Moves.WithLabelValues(st.spec.Name).Inc()
			}
			return stop
		})
		if stopped > 0 {
			m.log.V(2).Info("Stopped answering layer-2 addresses now owned by other nodes", "pool", st.spec.Name, "addresses", stopped, "candidates", candidateNames(st.view))
		}
	}
	m.applyLocked()
	seq := m.own.Set(ms)
	for _, st := range switched {
		st.seq = seq
	}
	own = m.own.State()
	if own.Epoch != m.epoch || !own.Live {
		m.poolMetricsLocked()
		return // the next call starts afresh, or waits for a renewal
	}
	touch := false
	for name, st := range m.pools {
		if st.iface == nil {
			continue
		}
		if st.switchRV == "" {
			// The view's first write, not the latest: a renewal since
			// must not raise the bar the others' acknowledgements meet.
			st.switchRV = m.own.FirstWrite(m.epoch, st.seq)
		}
		current := st.switchRV != ""
		acks := map[string]election.PeerAck{}
		for n, p := range peers {
			a, ok := p.Pools[name]
			if !ok {
				continue
			}
			acks[n] = election.PeerAck{View: a.View, RV: p.RV}
			// A node that switched to this view after this node's last
			// write waits for a newer acknowledgement: renew now.
			if current && a.View == st.view.Hash && election.After(p.AckSince[name], own.Written.RV) {
				touch = true
			}
		}
		st.ready, st.waiting = election.Ready(m.node, st.view, st.switchRV, seenRV, acks)
		if !st.ready {
			continue
		}
		if st.answering == nil {
			st.answering = map[netip.Addr]bool{}
		}
		started := 0
		for ip := range st.mine {
			if !st.answering[ip] {
				st.answering[ip] = true
				started++
				metricL2Moves.WithLabelValues(name).Inc()
			}
		}
		if started > 0 {
			m.log.V(2).Info("Answering layer-2 addresses this node owns", "pool", name, "addresses", started,
				"candidates", candidateNames(st.view), "view", st.view.Hash, "switch", st.switchRV, "seen", seenRV)
		}
	}
	m.applyLocked()
	m.poolMetricsLocked()
	if touch {
		m.own.Touch()
	}
}

// poolMetricsLocked sets the per-pool gauges and feeds the responders'
// counters to the metrics.
func (m *layer2Manager) poolMetricsLocked() {
	m.statsLocked()
	for name, st := range m.pools {
		if st.iface != nil {
			metricL2Answered.WithLabelValues(name).Set(float64(len(st.answering)))
			metricL2Candidates.WithLabelValues(name).Set(float64(len(st.view.Candidates)))
		}
	}
}

// stopCompetingLocked makes the node no longer a candidate of the pool:
// it stops answering its addresses at the next applyLocked, which every
// caller runs before the next electLocked removes the pool from its Lease.
func (m *layer2Manager) stopCompetingLocked(st *poolState) {
	if st.iface == nil {
		return
	}
	st.iface = nil
	st.answering, st.mine = nil, nil
	st.view, st.switchRV, st.ready, st.waiting = election.View{}, "", false, nil
	metricL2Answered.DeleteLabelValues(st.spec.Name)
	metricL2Candidates.DeleteLabelValues(st.spec.Name)
}

// candidateNames lists the nodes of a view, for logs.
func candidateNames(v election.View) []string {
	out := make([]string, len(v.Candidates))
	for i, c := range v.Candidates {
		out[i] = c.Node
	}
	return out
}
