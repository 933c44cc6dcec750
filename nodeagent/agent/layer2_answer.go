package agent

import (
	"context"
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

// applyLocked gives each responder the answers of the addresses this node
// answers on it, and announces every address newly answered or answered
// with a new MAC. An announcement still running for an address no longer
// answered here is cancelled (its other addresses are announced again).
func (m *layer2Manager) applyLocked() {
	for _, is := range m.ifaces {
		want := map[netip.Addr]net.HardwareAddr{}
		for _, st := range m.pools {
			if st.iface != is {
				continue
			}
			st.chosen = map[netip.Addr]chosenMAC{}
			for _, a := range st.spec.Addrs {
				if !st.answering[a.IP] || st.addrProblems[a.IP] != nil {
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
		if st.iface == nil {
			st.chosen = nil
		}
		m.cancelAnnouncementsLocked(st)
		var ips []netip.Addr
		for ip, c := range st.chosen {
			if st.iface.rejected[ip] == nil && st.announced[ip] != c.mac.String() {
				ips = append(ips, ip)
				if st.announced == nil {
					st.announced = map[netip.Addr]string{}
				}
				st.announced[ip] = c.mac.String()
			}
		}
		if len(ips) > 0 {
			m.announceLocked(st, ips)
		}
	}
}

// cancelAnnouncementsLocked stops the announcements that include an
// address the node no longer answers (or answers with another MAC than
// the one announced), and forgets the other addresses of those runs so
// that they are announced again.
func (m *layer2Manager) cancelAnnouncementsLocked(st *poolState) {
	gone := func(ip netip.Addr) bool { c, ok := st.chosen[ip]; return !ok || c.mac.String() != st.announced[ip] }
	st.batches = slices.DeleteFunc(st.batches, func(b *announceBatch) bool {
		for ip := range b.ips {
			if gone(ip) {
				b.cancel()
				for ip := range b.ips {
					delete(st.announced, ip)
				}
				return true
			}
		}
		return false
	})
	maps.DeleteFunc(st.announced, func(ip netip.Addr, _ string) bool { _, ok := st.chosen[ip]; return !ok })
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
// background, until they are done or cancelled.
func (m *layer2Manager) announceLocked(st *poolState, ips []netip.Addr) {
	slices.SortFunc(ips, netip.Addr.Compare)
	ctx, cancel := context.WithCancel(context.Background())
	b := &announceBatch{ips: make(map[netip.Addr]bool, len(ips)), cancel: cancel}
	for _, ip := range ips {
		b.ips[ip] = true
	}
	st.batches = append(st.batches, b)
	is, pool := st.iface, st.spec.Name
	m.log.V(2).Info("Announcing layer-2 addresses", "pool", pool, "interface", is.name, "addresses", ips)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		err := is.r.Announce(ctx, ips)
		var rej *layer2.RejectedError
		if err != nil && ctx.Err() == nil && !errors.As(err, &rej) {
			m.log.Error(err, "Announcing layer-2 addresses failed", "pool", pool, "interface", is.name)
		}
		m.mu.Lock()
		st.batches = slices.DeleteFunc(st.batches, func(x *announceBatch) bool { return x == b })
		m.statsLocked()
		m.mu.Unlock()
	}()
}
