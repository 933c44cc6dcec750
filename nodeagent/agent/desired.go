package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// DefaultAddPathSendMax is how many paths per prefix are sent when a
// BgpPeer does not say: enough for every node of a large rack.
const DefaultAddPathSendMax = 255

// Problem is a configuration error found while computing the desired state;
// it names the object so it can go into that object's status.
type Problem struct {
	Object  string // e.g. "BgpPeer/leaf1"
	Message string
}

// SecretReader reads one key of a Secret in the speaker's namespace.
type SecretReader func(name, key string) (string, error)

// State is what this node's speaker must do.
type State struct {
	// Enabled is false when this node must not speak BGP at all (not a
	// speaker node, or no usable BgpConf): everything is withdrawn.
	Enabled bool
	Global  bgp.Global
	Peers   []bgp.Peer
	Paths   []bgp.Path
	// PlanPaths counts, per plan (namespace/name), the paths it
	// contributed, for the plan's per-node status.
	PlanPaths map[string]int
}

// Desired computes State from the objects. It never mutates them.
func Desired(node *v1.Node, conf *v1alpha2.BgpConf, peers []*v1alpha2.BgpPeer, plans []*v1alpha2.LoadBalancerPlan, secret SecretReader) (State, []Problem) {
	var st State
	var problems []Problem
	if node == nil || node.Labels[v1alpha2.LabelSpeaker] != v1alpha2.LabelSpeakerValue {
		return st, nil
	}
	if conf == nil {
		return st, []Problem{{Object: "BgpConf/default", Message: "BgpConf default does not exist: BGP is off on this node"}}
	}
	rack := node.Labels[v1alpha2.LabelRack]
	g := bgp.Global{AS: conf.Spec.As, ListenPort: conf.Spec.ListenPort}
	if as, ok := conf.Spec.AsPerRack[rack]; ok && rack != "" {
		g.AS = as
	}
	if g.AS == 0 {
		return st, []Problem{{Object: "BgpConf/default", Message: fmt.Sprintf("no AS for node %s (rack %q): set spec.as or spec.asPerRack", node.Name, rack)}}
	}
	if conf.Spec.RouterId != "" {
		id, err := netip.ParseAddr(conf.Spec.RouterId)
		if err != nil || !id.Is4() {
			return st, []Problem{{Object: "BgpConf/default", Message: fmt.Sprintf("spec.routerId %q is not an IPv4 address", conf.Spec.RouterId)}}
		}
		g.RouterID = id
	} else if id, ok := nodeIPv4(node); ok {
		g.RouterID = id
	} else {
		return st, []Problem{{Object: "BgpConf/default", Message: fmt.Sprintf("node %s has no IPv4 InternalIP to use as router ID: set spec.routerId", node.Name)}}
	}
	if gr := conf.Spec.GracefulRestart; gr != nil && gr.Enabled {
		g.GracefulRestart, g.RestartTime = true, gr.RestartTime
	}
	st.Enabled, st.Global = true, g

	nodeLabels := labels.Set(node.Labels)
	for _, bp := range peers {
		if bp.Spec.NodeSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(bp.Spec.NodeSelector)
			if err != nil {
				problems = append(problems, Problem{"BgpPeer/" + bp.Name, fmt.Sprintf("invalid nodeSelector: %v", err)})
				continue
			}
			if !sel.Matches(nodeLabels) {
				continue
			}
		}
		p, err := peerFrom(bp, secret)
		if err != nil {
			problems = append(problems, Problem{"BgpPeer/" + bp.Name, err.Error()})
			continue
		}
		st.Peers = append(st.Peers, p)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })

	st.PlanPaths = map[string]int{}
	seen := map[bgp.Path]bool{}
	for _, plan := range plans {
		n := 0
		for _, r := range plan.Spec.Racks {
			if !slices.Contains(r.Speakers, node.Name) {
				continue
			}
			for _, a := range plan.Spec.Addresses {
				if a.Protocol != v1alpha2.ProtocolBGP {
					continue
				}
				ip, err := netip.ParseAddr(a.IP)
				if err != nil {
					continue
				}
				prefix := netip.PrefixFrom(ip, ip.BitLen())
				for _, nh := range r.NextHops {
					hop, err := netip.ParseAddr(nh)
					if err != nil || hop.Is4() != ip.Is4() {
						continue
					}
					path := bgp.Path{Prefix: prefix, NextHop: hop}
					n++
					if !seen[path] {
						seen[path] = true
						st.Paths = append(st.Paths, path)
					}
				}
			}
		}
		if n > 0 {
			st.PlanPaths[plan.Namespace+"/"+plan.Name] = n
		}
	}
	sort.Slice(st.Paths, func(i, j int) bool {
		a, b := st.Paths[i], st.Paths[j]
		if a.Prefix != b.Prefix {
			return a.Prefix.Addr().Less(b.Prefix.Addr())
		}
		return a.NextHop.Less(b.NextHop)
	})
	return st, problems
}

func nodeIPv4(n *v1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Unmap().Is4() {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// peerFrom maps a BgpPeer to the speaker's neighbor settings.
func peerFrom(bp *v1alpha2.BgpPeer, secret SecretReader) (bgp.Peer, error) {
	p := bgp.Peer{Name: bp.Name, AddPathSendMax: DefaultAddPathSendMax}
	c := bp.Spec.Conf
	if c == nil || c.NeighborAddress == "" {
		return p, fmt.Errorf("spec.conf.neighborAddress is required")
	}
	addr, err := netip.ParseAddr(c.NeighborAddress)
	if err != nil {
		return p, fmt.Errorf("spec.conf.neighborAddress %q is not an IP address", c.NeighborAddress)
	}
	p.Address = addr.Unmap()
	if c.PeerAs == 0 {
		return p, fmt.Errorf("spec.conf.peerAs is required")
	}
	p.AS = c.PeerAs
	p.Password = c.AuthPassword
	if ref := c.AuthPasswordSecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = "password"
		}
		if secret == nil {
			return p, fmt.Errorf("password Secret %s cannot be read", ref.Name)
		}
		pw, err := secret(ref.Name, key)
		if err != nil {
			return p, fmt.Errorf("password Secret %s key %s: %w", ref.Name, key, err)
		}
		p.Password = strings.TrimRight(pw, "\n")
	}
	if m := bp.Spec.EbgpMultihop; m != nil && m.Enabled {
		p.EBGPMultihopTTL = m.MultihopTtl
		if p.EBGPMultihopTTL == 0 {
			p.EBGPMultihopTTL = 255
		}
	}
	if t := bp.Spec.Timers; t != nil && t.Config != nil {
		var err error
		if p.HoldTime, err = seconds("holdTime", t.Config.HoldTime); err != nil {
			return p, err
		}
		if p.Keepalive, err = seconds("keepaliveInterval", t.Config.KeepaliveInterval); err != nil {
			return p, err
		}
		if p.ConnectRetry, err = seconds("connectRetry", t.Config.ConnectRetry); err != nil {
			return p, err
		}
	}
	if tr := bp.Spec.Transport; tr != nil && tr.RemotePort != 0 {
		if tr.RemotePort > 65535 {
			return p, fmt.Errorf("spec.transport.remotePort %d is out of range", tr.RemotePort)
		}
		p.Port = uint16(tr.RemotePort)
	}
	if gr := bp.Spec.GracefulRestart; gr != nil && gr.Enabled {
		p.GracefulRestart = true
	}
	if b := bp.Spec.Bfd; b != nil && b.Enabled {
		p.BFD = &bgp.BFD{
			DesiredMinTx:     time.Duration(b.DesiredMinTxIntervalMs) * time.Millisecond,
			RequiredMinRx:    time.Duration(b.RequiredMinRxIntervalMs) * time.Millisecond,
			DetectMultiplier: b.DetectMultiplier,
		}
	}
	for _, af := range bp.Spec.AfiSafis {
		if af != nil && af.AddPaths != nil && af.AddPaths.Config != nil && af.AddPaths.Config.SendMax > 0 {
			p.AddPathSendMax = af.AddPaths.Config.SendMax
		}
	}
	return p, nil
}

// seconds parses OpenELB's timer strings ("30", "30s"); "" is the default.
func seconds(field, v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("spec.timers.config.%s %q is not a number of seconds", field, v)
	}
	return d, nil
}
