package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
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

// The IPv6 side of a dual-stack lab (Seed000Options.DualStack): each
// segment gets the IPv6 twin of its IPv4 subnet, with the same host
// numbers (leaf1 fd00:168::2, master1 fd00:168::3, worker-p002
// fd00:168:1::2; the spine fd00:10:1::1 toward leaf1, the client
// fd00:10::2), and the routers run IPv6 sessions beside the IPv4 ones.
const (
	Leaf1Addr6  = "fd00:168::2"
	Leaf2Addr6  = "fd00:168:1::1"
	ClientIP6   = "fd00:10::2"
	spineLeaf16 = "fd00:10:1::"
	spineLeaf26 = "fd00:10:2::"
)

// SpeakerRange6 is SpeakerRange for IPv6.
var SpeakerRange6 = netip.MustParsePrefix("fd00:168::/32")

// Node is one Kubernetes node's namespace.
type Node struct {
	Name   string // Kubernetes node name
	NS     string
	IP     string // InternalIP on the rack segment
	IP6    string // its IPv6 InternalIP in a dual-stack lab ("" otherwise)
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
	// DualStack adds IPv6 to every segment and IPv6 sessions between the
	// routers; the leaves accept speakers over IPv6 too, and take IPv6
	// routes over the speakers' IPv4 sessions as well.
	DualStack bool
	// BIRDLeaves run these leaves ("leaf1", "leaf2") on BIRD 2 instead of
	// FRR: the rack's nodes as explicit eBGP neighbors with ADD-PATH
	// receive, ECMP kernel routes, leaf2's password when set (no BFD, no
	// dual stack, no multihop neighbors from the other rack).
	BIRDLeaves []string
}

// Seed000 is the running topology.
type Seed000 struct {
	Lab *Lab
	// Spine, Leaf1, Leaf2 are the FRR routers (a leaf on BIRD is nil
	// here and in BIRD instead).
	Spine, Leaf1, Leaf2 *FRR
	BIRD                map[string]*BIRD
	Client, Mgmt        string // namespaces
	Nodes               []*Node
	// APIServer is the kube-apiserver address as nodes see it.
	APIServer string
	Forwarder *Forwarder
	dualStack bool
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
{{- if .DualStack}}
ipv6 forwarding
{{- else}}
no ipv6 forwarding
{{- end}}
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
{{- range .Neighbors6}}
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
{{- if .DualStack}}
 neighbor RACK6 peer-group
 neighbor RACK6 remote-as external
 neighbor RACK6 timers 3 9
{{- if .Password}}
 neighbor RACK6 password {{.Password}}
{{- end}}
 bgp listen range {{.Rack6}} peer-group RACK6
 neighbor REMOTE6 peer-group
 neighbor REMOTE6 remote-as external
 neighbor REMOTE6 ebgp-multihop 4
 neighbor REMOTE6 timers 3 9
{{- if .Password}}
 neighbor REMOTE6 password {{.Password}}
{{- end}}
 bgp listen range {{.Remote6}} peer-group REMOTE6
{{- end}}
{{- end}}
 !
 address-family ipv4 unicast
  redistribute connected
  maximum-paths 16
{{- range .Neighbors6}}
  no neighbor {{.Addr}} activate
{{- end}}
{{- if and .Rack .DualStack}}
  no neighbor RACK6 activate
  no neighbor REMOTE6 activate
{{- end}}
 exit-address-family
{{- if .DualStack}}
 !
 address-family ipv6 unicast
  redistribute connected
  maximum-paths 16
{{- range .Neighbors6}}
  neighbor {{.Addr}} activate
{{- end}}
{{- if .Rack}}
  neighbor RACK activate
  neighbor REMOTE activate
  neighbor RACK6 activate
  neighbor REMOTE6 activate
{{- end}}
 exit-address-family
{{- end}}
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
	// Neighbors6 are IPv6 sessions (IPv6 unicast only) of a dual-stack
	// lab.
	Neighbors6 []struct {
		Addr string
		AS   uint32
	}
	DualStack bool
	// Rack6 and Remote6 are Rack and Remote for IPv6.
	Rack6, Remote6 string
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
	s := &Seed000{Lab: l, BIRD: map[string]*BIRD{}}
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
	if opts.DualStack {
		s.Nodes[0].IP6, s.Nodes[1].IP6, s.Nodes[2].IP6 = "fd00:168::3", "fd00:168::4", "fd00:168:1::2"
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
	if opts.DualStack {
		steps = append(steps, dualStackSteps(l, ns, s.Nodes)...)
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
	if opts.DualStack {
		for name, c := range confs {
			c.DualStack = true
			switch name {
			case "spine":
				c.Neighbors6 = append(c.Neighbors6, neighbor(spineLeaf16+"2", Leaf1AS), neighbor(spineLeaf26+"2", Leaf2AS))
			case "leaf1":
				c.Neighbors6 = append(c.Neighbors6, neighbor(spineLeaf16+"1", SpineAS))
				c.Rack6, c.Remote6 = "fd00:168::/64", "fd00:168:1::/64"
			case "leaf2":
				c.Neighbors6 = append(c.Neighbors6, neighbor(spineLeaf26+"1", SpineAS))
				c.Rack6, c.Remote6 = "fd00:168:1::/64", "fd00:168::/64"
			}
			confs[name] = c
		}
	}

	for _, r := range []string{"spine", "leaf1", "leaf2"} {
		if slices.Contains(opts.BIRDLeaves, r) {
			br, err := s.startBIRDLeaf(ctx, r, ns[r], confs[r])
			if err != nil {
				return nil, err
			}
			s.BIRD[r] = br
			continue
		}
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
	s.dualStack = opts.DualStack
	return s, s.waitFabric(ctx)
}

// startBIRDLeaf runs leaf r on BIRD with the neighbors, AS and password
// its FRR configuration would have.
func (s *Seed000) startBIRDLeaf(ctx context.Context, r, ns string, c routerConf) (*BIRD, error) {
	if len(c.Neighbors) != 1 || c.DualStack {
		return nil, fmt.Errorf("%s on BIRD: one IPv4 spine neighbor and no dual stack expected", r)
	}
	conf := struct {
		RouterID, Spine, Password string
		AS, SpineAS               uint32
		Nodes                     []birdNode
	}{RouterID: c.RouterID, Spine: c.Neighbors[0].Addr, SpineAS: c.Neighbors[0].AS, AS: c.AS, Password: c.Password}
	for _, n := range c.RackNodes {
		conf.Nodes = append(conf.Nodes, birdNode{Proto: BIRDProto(n), Addr: n})
	}
	var b strings.Builder
	if err := birdLeafTmpl.Execute(&b, conf); err != nil {
		return nil, err
	}
	return s.Lab.StartBIRD(ctx, r, ns, b.String())
}

// dualStackSteps add the IPv6 side: addresses without duplicate address
// detection (they are usable at once), routes, forwarding and ECMP hashing
// on L3+L4 like IPv4.
func dualStackSteps(l *Lab, ns map[string]string, nodes []*Node) []func() error {
	addr := func(n, ifname, cidr string) func() error {
		return func() error { return l.IP(ns[n], "-6", "addr", "add", cidr, "dev", ifname, "nodad") }
	}
	steps := []func() error{
		addr("spine", "leaf1", spineLeaf16+"1/64"),
		addr("spine", "leaf2", spineLeaf26+"1/64"),
		addr("spine", "client", "fd00:10::1/64"),
		addr("leaf1", "spine", spineLeaf16+"2/64"),
		addr("leaf2", "spine", spineLeaf26+"2/64"),
		addr("client", "eth0", ClientIP6+"/64"),
		func() error { return l.IP(ns["client"], "-6", "route", "add", "default", "via", "fd00:10::1") },
		addr("leaf1", "rack", Leaf1Addr6+"/64"),
		addr("leaf2", "rack", Leaf2Addr6+"/64"),
	}
	for _, n := range nodes {
		gw := Leaf1Addr6
		if n.Leaf == "leaf2" {
			gw = Leaf2Addr6
		}
		steps = append(steps,
			func() error { return l.IP(n.NS, "-6", "addr", "add", n.IP6+"/64", "dev", "eth0", "nodad") },
			func() error { return l.IP(n.NS, "-6", "route", "add", "default", "via", gw) },
		)
	}
	for _, r := range []string{"spine", "leaf1", "leaf2"} {
		steps = append(steps,
			func() error { return l.Sysctl(ns[r], "net.ipv6.conf.all.forwarding", "1") },
			func() error { return l.Sysctl(ns[r], "net.ipv6.fib_multipath_hash_policy", "3") },
			func() error { return l.Sysctl(ns[r], "net.ipv6.fib_multipath_hash_fields", "0x0037") },
		)
	}
	return steps
}

// waitFabric waits for the spine's two leaf sessions.
func (s *Seed000) waitFabric(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		nb, err := s.Spine.Neighbors(ctx)
		up := err == nil && nb["10.0.1.2"].State == "Established" && nb["10.0.2.2"].State == "Established"
		if s.dualStack {
			up = up && nb[spineLeaf16+"2"].State == "Established" && nb[spineLeaf26+"2"].State == "Established"
		}
		if up {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("spine-leaf sessions not established: %v (last error %v)", nb, err)
		case <-sleep(200):
		}
	}
}
