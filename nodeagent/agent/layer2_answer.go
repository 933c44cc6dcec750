package agent

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
)

// chosenMAC is the MAC an address is answered with and the node it
// belongs to, which the report names when it is not this one.
type chosenMAC struct {
	mac  net.HardwareAddr
	node string
}

// applyLocked gives each responder the answers of the pools this node
// leads on it, and announces every address newly answered or answered with
// a new MAC.
func (m *layer2Manager) applyLocked() {
	for _, is := range m.ifaces {
		want := map[netip.Addr]net.HardwareAddr{}
		for _, st := range m.pools {
			if st.iface != is || st.term == nil {
				continue
			}
			st.chosen = map[netip.Addr]chosenMAC{}
			for _, a := range st.spec.Addrs {
				if st.addrProblems[a.IP] != nil {
					continue
				}
				if mac, node := answerMAC(a.IP, a.Plan, m.macs[st.spec.Name], m.node, is.mac); mac != nil {
					st.chosen[a.IP] = chosenMAC{mac: mac, node: node}
					want[a.IP] = mac
				}
			}
		}
		m.setAnswersLocked(is, want)
	}
	for _, st := range m.pools {
		if st.term == nil {
			continue
		}
		var ips []netip.Addr
		for ip, c := range st.chosen {
			if st.iface.rejected[ip] == nil && st.announced[ip] != c.mac.String() {
				ips = append(ips, ip)
				st.announced[ip] = c.mac.String()
			}
		}
		maps.DeleteFunc(st.announced, func(ip netip.Addr, _ string) bool { _, ok := st.chosen[ip]; return !ok })
		if len(ips) > 0 {
			m.announceLocked(st, ips)
		}
	}
}

func (m *layer2Manager) setAnswersLocked(is *ifaceState, want map[netip.Addr]net.HardwareAddr) {
	cur := make(map[netip.Addr]string, len(want))
	for ip, mac := range want {
		cur[ip] = mac.String()
	}
	if maps.Equal(cur, is.answers) {
		return
	}
	err := is.r.SetAnswers(want)
	is.answers, is.rejected = cur, nil
	var rej *layer2.RejectedError
	switch {
	case errors.As(err, &rej):
		is.rejected = map[netip.Addr]error{}
		for _, e := range rej.Errs {
			is.rejected[e.Addr] = e.Err
		}
		m.log.Info("Some layer-2 addresses cannot be answered", "interface", is.name, "problem", err.Error())
	case err != nil:
		m.log.Error(err, "Setting layer-2 answers failed", "interface", is.name)
	}
}

// announceLocked sends gratuitous ARPs / unsolicited NAs for ips in the
// background, for as long as the leadership term lasts.
func (m *layer2Manager) announceLocked(st *poolState, ips []netip.Addr) {
	slices.SortFunc(ips, netip.Addr.Compare)
	ctx, is, pool := st.termCtx, st.iface, st.spec.Name
	m.log.V(2).Info("Announcing layer-2 addresses", "pool", pool, "interface", is.name, "addresses", ips)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := is.r.Announce(ctx, ips)
		var rej *layer2.RejectedError
		if err != nil && ctx.Err() == nil && !errors.As(err, &rej) {
			m.log.Error(err, "Announcing layer-2 addresses failed", "pool", pool, "interface", is.name)
		}
		m.mu.Lock()
		m.statsLocked()
		m.mu.Unlock()
	}()
}
