package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"text/template"
	"time"
)

// The seed-000 topology ("Configure OpenELB for Multi-router Clusters"):
//
//	          client 10.0.0.2
//	              |
//	        spine 10.0.0.1  AS 65100
//	         /              \
//	  leaf1 AS 65101       leaf2 AS 65102
//	  192.168.0.2/24       192.168.1.1/24
//	      [sw1]                [sw2]        (bridges)
//	   /        \               |
//	master1   worker-p001   worker-p002
//	.0.3       .0.4          .1.2
//
// Every node also has eth1 on a management network (10.255.0.0/24, a bridge
// in its own namespace) where a forwarder at 10.255.0.1:6443 relays to the
// test's kube-apiserver on loopback. Leaves accept BGP from any speaker in
// 192.168.0.0/16 (dynamic neighbors: single hop from their own rack's
// subnet, with BFD when asked; multihop from the other rack's subnet, so a
// node relabelled into the other rack can still peer with its leaf),
// advertise their
// connected subnets, and do ECMP over the next hops they learn; the spine
// does ECMP over the leaves.
const (
	SpineAS uint32 = 65100
	Leaf1AS uint32 = 65101
	Leaf2AS uint32 = 65102

	Leaf1Addr = "192.168.0.2"
	Leaf2Addr = "192.168.1.1"
	ClientIP  = "10.0.0.2"
	MgmtAddr  = "10.255.0.1"
)

// SpeakerRange is where the leaves accept speakers from: every node subnet.
var SpeakerRange = netip.MustParsePrefix("192.168.0.0/16")

// Node is one Kubernetes node's namespace.
type Node struct {
	Name   string // Kubernetes node name
	NS     string
	IP     string // InternalIP on the rack segment
	MgmtIP string
	Leaf   string // the leaf it is cabled to
}

// Seed000Options tune the routers.
type Seed000Options struct {
	// APIServer is the host:port of the kube-apiserver in the caller's
	// namespace that nodes reach through the management network; empty:
	// no management network forwarder.
	APIServer string
	// Leaf2Password, when set, requires TCP MD5 with this password on
	// leaf2's speaker sessions.
	Leaf2Password string
	// BFD enables BFD on the leaves' speaker sessions.
	BFD bool
}

// Seed000 is the running topology.
type Seed000 struct {
	Lab                 *Lab
	Spine, Leaf1, Leaf2 *FRR
	Client, Mgmt        string // namespaces
	Nodes               []*Node
	// APIServer is the kube-apiserver address as nodes see it.
	APIServer string
	Forwarder *Forwarder
}

// Node returns the node with the given Kubernetes name.
func (s *Seed000) Node(name string) *Node {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Router returns a router by name (spine, leaf1, leaf2).
func (s *Seed000) Router(name string) *FRR {
	switch name {
	case "spine":
		return s.Spine
	case "leaf1":
		return s.Leaf1
	case "leaf2":
		return s.Leaf2
	}
	return nil
}

var routerTmpl = template.Must(template.New("frr").Parse(`frr version 8.4
frr defaults datacenter
hostname {{.Name}}
no ipv6 forwarding
! Routes carry their next hops inline (no kernel nexthop objects), so
! route events name the gateways (benchmarks watch them over netlink).
no zebra nexthop kernel enable
!
router bgp {{.AS}}
 bgp router-id {{.RouterID}}
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp bestpath as-path multipath-relax
{{- range .Neighbors}}
 neighbor {{.Addr}} remote-as {{.AS}}
 neighbor {{.Addr}} timers 1 3
 neighbor {{.Addr}} timers connect 1
{{- end}}
{{- if .Rack}}
 neighbor RACK peer-group
 neighbor RACK remote-as external
 neighbor RACK timers 3 9
{{- if .Password}}
 neighbor RACK password {{.Password}}
{{- end}}
{{- if .BFD}}
 neighbor RACK bfd
 neighbor RACK bfd profile fast
{{- end}}
 bgp listen range {{.Rack}} peer-group RACK
{{- range .RackNodes}}
 neighbor {{.}} peer-group RACK
{{- end}}
 neighbor REMOTE peer-group
 neighbor REMOTE remote-as external
 neighbor REMOTE ebgp-multihop 4
 neighbor REMOTE timers 3 9
{{- if .Password}}
 neighbor REMOTE password {{.Password}}
{{- end}}
 bgp listen range {{.Remote}} peer-group REMOTE
{{- end}}
 !
 address-family ipv4 unicast
  redistribute connected
  maximum-paths 16
 exit-address-family
!
{{- if .BFD}}
bfd
 profile fast
  receive-interval 100
  transmit-interval 100
  detect-multiplier 3
 !
!
{{- end}}
`))

type routerConf struct {
	Name, RouterID string
	AS             uint32
	Neighbors      []struct {
		Addr string
		AS   uint32
	}
	// Rack is the leaf's own node subnet: speakers there are one hop
	// away (single-hop BFD). Remote is the other rack's subnet: a node
	// relabelled into this rack from there peers multihop.
	Rack, Remote string
	// RackNodes are configured as explicit neighbors (FRR 8.4's bfdd
	// cannot match BFD packets of dynamic neighbors to their session).
	RackNodes []string
	Password  string
	BFD       bool
}

func neighbor(addr string, as uint32) struct {
	Addr string
	AS   uint32
} {
	return struct {
		Addr string
		AS   uint32
	}{addr, as}
}

// BuildSeed000 creates the namespaces, links and routers of the topology
// and waits until the spine has established both leaf sessions.
func BuildSeed000(ctx context.Context, l *Lab, opts Seed000Options) (*Seed000, error) {
	s := &Seed000{Lab: l}
	ns := map[string]string{}
	for _, n := range []string{"spine", "leaf1", "leaf2", "sw1", "sw2", "client", "mgmt", "master1", "worker-p001", "worker-p002"} {
		full, err := l.AddNS(n)
		if err != nil {
			return nil, err
		}
		ns[n] = full
	}
	s.Client, s.Mgmt = ns["client"], ns["mgmt"]
	s.Nodes = []*Node{
		{Name: "master1", NS: ns["master1"], IP: "192.168.0.3", MgmtIP: "10.255.0.11", Leaf: "leaf1"},
		{Name: "worker-p001", NS: ns["worker-p001"], IP: "192.168.0.4", MgmtIP: "10.255.0.12", Leaf: "leaf1"},
		{Name: "worker-p002", NS: ns["worker-p002"], IP: "192.168.1.2", MgmtIP: "10.255.0.13", Leaf: "leaf2"},
	}
	steps := []func() error{
		// Spine: a /30 to each leaf, the client's /24.
		func() error { return l.Veth(ns["spine"], "leaf1", ns["leaf1"], "spine") },
		func() error { return l.Veth(ns["spine"], "leaf2", ns["leaf2"], "spine") },
		func() error { return l.Veth(ns["spine"], "client", ns["client"], "eth0") },
		func() error { return l.Addr(ns["spine"], "leaf1", "10.0.1.1/30") },
		func() error { return l.Addr(ns["spine"], "leaf2", "10.0.2.1/30") },
		func() error { return l.Addr(ns["spine"], "client", "10.0.0.1/24") },
		func() error { return l.Addr(ns["leaf1"], "spine", "10.0.1.2/30") },
		func() error { return l.Addr(ns["leaf2"], "spine", "10.0.2.2/30") },
		func() error { return l.Addr(ns["client"], "eth0", ClientIP+"/24") },
		func() error { return l.IP(ns["client"], "route", "add", "default", "via", "10.0.0.1") },
		// Rack segments: a switch (bridge namespace) per rack, the leaf
		// cabled to it like the nodes. (A bridge inside the router's own
		// namespace confuses FRR 8.4's bfdd, which then finds no session
		// for packets arriving on the bridge.)
		func() error { return l.Bridge(ns["sw1"], "br0") },
		func() error { return l.Bridge(ns["sw2"], "br0") },
		func() error { return l.Veth(ns["leaf1"], "rack", ns["sw1"], "leaf1") },
		func() error { return l.Veth(ns["leaf2"], "rack", ns["sw2"], "leaf2") },
		func() error { return l.Enslave(ns["sw1"], "leaf1", "br0") },
		func() error { return l.Enslave(ns["sw2"], "leaf2", "br0") },
		func() error { return l.Addr(ns["leaf1"], "rack", Leaf1Addr+"/24") },
		func() error { return l.Addr(ns["leaf2"], "rack", Leaf2Addr+"/24") },
		// Management network.
		func() error { return l.Bridge(ns["mgmt"], "br0") },
		func() error { return l.Addr(ns["mgmt"], "br0", MgmtAddr+"/24") },
	}
	for _, n := range s.Nodes {
		swNS := ns["sw1"]
		gw := Leaf1Addr
		if n.Leaf == "leaf2" {
			swNS, gw = ns["sw2"], Leaf2Addr
		}
		steps = append(steps,
			func() error { return l.Veth(swNS, n.Name, n.NS, "eth0") },
			func() error { return l.Enslave(swNS, n.Name, "br0") },
			func() error { return l.Addr(n.NS, "eth0", n.IP+"/24") },
			func() error { return l.IP(n.NS, "route", "add", "default", "via", gw) },
			func() error { return l.Veth(ns["mgmt"], n.Name, n.NS, "eth1") },
			func() error { return l.Enslave(ns["mgmt"], n.Name, "br0") },
			func() error { return l.Addr(n.NS, "eth1", n.MgmtIP+"/24") },
			func() error { return l.Sysctl(n.NS, "net.ipv4.conf.all.rp_filter", "0") },
		)
	}
	for i, r := range []string{"spine", "leaf1", "leaf2"} {
		steps = append(steps,
			func() error { return l.Sysctl(ns[r], "net.ipv4.ip_forward", "1") },
			func() error { return l.Sysctl(ns[r], "net.ipv4.conf.all.rp_filter", "0") },
			// ECMP on L3+L4 with a different seed per router: namespaces
			// otherwise reuse the skb's socket hash and every router
			// picks the same branch (see LAB-NOTES).
			func() error { return l.Sysctl(ns[r], "net.ipv4.fib_multipath_hash_policy", "3") },
			func() error { return l.Sysctl(ns[r], "net.ipv4.fib_multipath_hash_fields", "0x0037") },
			func() error {
				return l.Sysctl(ns[r], "net.ipv4.fib_multipath_hash_seed", fmt.Sprint(1000003*(i+1)))
			},
		)
	}
	for _, f := range steps {
		if err := f(); err != nil {
			return nil, err
		}
	}

	confs := map[string]routerConf{
		"spine": {Name: "spine", RouterID: "10.0.0.1", AS: SpineAS},
		"leaf1": {Name: "leaf1", RouterID: Leaf1Addr, AS: Leaf1AS, Rack: "192.168.0.0/24", Remote: "192.168.1.0/24", RackNodes: []string{"192.168.0.3", "192.168.0.4"}, BFD: opts.BFD},
		"leaf2": {Name: "leaf2", RouterID: Leaf2Addr, AS: Leaf2AS, Rack: "192.168.1.0/24", Remote: "192.168.0.0/24", RackNodes: []string{"192.168.1.2"}, BFD: opts.BFD, Password: opts.Leaf2Password},
	}
	sp := confs["spine"]
	sp.Neighbors = append(sp.Neighbors, neighbor("10.0.1.2", Leaf1AS), neighbor("10.0.2.2", Leaf2AS))
	confs["spine"] = sp
	l1 := confs["leaf1"]
	l1.Neighbors = append(l1.Neighbors, neighbor("10.0.1.1", SpineAS))
	confs["leaf1"] = l1
	l2 := confs["leaf2"]
	l2.Neighbors = append(l2.Neighbors, neighbor("10.0.2.1", SpineAS))
	confs["leaf2"] = l2

	for _, r := range []string{"spine", "leaf1", "leaf2"} {
		var b strings.Builder
		if err := routerTmpl.Execute(&b, confs[r]); err != nil {
			return nil, err
		}
		f, err := l.StartFRR(ctx, r, ns[r], b.String())
		if err != nil {
			return nil, err
		}
		switch r {
		case "spine":
			s.Spine = f
		case "leaf1":
			s.Leaf1 = f
		case "leaf2":
			s.Leaf2 = f
		}
	}
	if opts.APIServer != "" {
		fw, err := l.Forward(ns["mgmt"], MgmtAddr+":6443", opts.APIServer)
		if err != nil {
			return nil, fmt.Errorf("management forwarder: %w", err)
		}
		s.Forwarder, s.APIServer = fw, MgmtAddr+":6443"
	}
	return s, s.waitFabric(ctx)
}

// waitFabric waits for the spine's two leaf sessions.
func (s *Seed000) waitFabric(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		nb, err := s.Spine.Neighbors(ctx)
		if err == nil && nb["10.0.1.2"].State == "Established" && nb["10.0.2.2"].State == "Established" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("spine-leaf sessions not established: %v (last error %v)", nb, err)
		case <-sleep(200):
		}
	}
}
