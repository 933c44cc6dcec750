package netlab

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"
)

// The layer-2 topology: one Ethernet segment (a bridge in its own
// namespace) with a client and the nodes on it, dual-stack.
//
//	       client  192.168.50.2  2001:db8:50::2
//	          |
//	      [sw] br0
//	    /     |     \
//	node1   node2   node3      192.168.50.11.. 2001:db8:50::11..
//	                           MAC 02:00:00:00:50:11..
//
// Each node's interface to the segment is eth0, with a fixed MAC so a MAC
// names its node. Multicast snooping is off on the bridge, as on a plain
// switch, so solicited-node multicast reaches every node. The nodes reach
// the test's kube-apiserver through a forwarder listening, inside each
// node's namespace, on the API server's own loopback address: the
// caller's kubeconfig works unchanged there, and cutting one node's
// forwarder partitions that node alone from the API server.
const (
	L2ClientIP4 = "192.168.50.2"
	L2ClientIP6 = "2001:db8:50::2"
	// L2Interface is the segment interface of the client and every node.
	L2Interface = "eth0"
)

// L2Subnet4 and L2Subnet6 are the segment's subnets.
var (
	L2Subnet4 = netip.MustParsePrefix("192.168.50.0/24")
	L2Subnet6 = netip.MustParsePrefix("2001:db8:50::/64")
)

// L2Options shape the layer-2 lab.
type L2Options struct {
	// Nodes are the Kubernetes node names; default node1, node2, node3.
	Nodes []string
	// APIServer is the host:port of the kube-apiserver on the caller's
	// loopback; empty: no forwarders.
	APIServer string
}

// L2Node is one node's namespace on the segment.
type L2Node struct {
	Name     string
	NS       string
	MAC      net.HardwareAddr
	IP4, IP6 netip.Addr
	// Forwarder relays the node's API server connections; Down cuts this
	// node alone off the API server.
	Forwarder *Forwarder
}

// L2 is the running layer-2 topology.
type L2 struct {
	Lab            *Lab
	Switch, Client string // namespaces
	ClientMAC      net.HardwareAddr
	Nodes          []*L2Node
}

// BuildL2 creates the segment, the client and the nodes.
func BuildL2(ctx context.Context, l *Lab, opts L2Options) (*L2, error) {
	names := opts.Nodes
	if len(names) == 0 {
		names = []string{"node1", "node2", "node3"}
	}
	if len(names) > 80 {
		return nil, fmt.Errorf("at most 80 nodes on one segment, got %d", len(names))
	}
	s := &L2{Lab: l, ClientMAC: net.HardwareAddr{2, 0, 0, 0, 0x50, 0x02}}
	var err error
	if s.Switch, err = l.AddNS("sw"); err != nil {
		return nil, err
	}
	if s.Client, err = l.AddNS("client"); err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return l.Bridge(s.Switch, "br0") },
		func() error { return l.IP(s.Switch, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0") },
	}
	attach := func(ns, port string, mac net.HardwareAddr, ip4, ip6 netip.Addr) {
		steps = append(steps,
			func() error { return l.Veth(s.Switch, port, ns, L2Interface) },
			func() error { return l.Enslave(s.Switch, port, "br0") },
			func() error { return l.IP(ns, "link", "set", L2Interface, "address", mac.String()) },
			func() error { return l.Addr(ns, L2Interface, netip.PrefixFrom(ip4, L2Subnet4.Bits()).String()) },
			// No duplicate address detection: the address is usable at once.
			func() error {
				return l.IP(ns, "addr", "add", netip.PrefixFrom(ip6, L2Subnet6.Bits()).String(), "dev", L2Interface, "nodad")
			},
		)
	}
	attach(s.Client, "client", s.ClientMAC, netip.MustParseAddr(L2ClientIP4), netip.MustParseAddr(L2ClientIP6))
	for i, name := range names {
		ns, err := l.AddNS(fmt.Sprintf("n%d", i+1))
		if err != nil {
			return nil, err
		}
		b := byte(0x11 + i)
		n := &L2Node{Name: name, NS: ns, MAC: net.HardwareAddr{2, 0, 0, 0, 0x50, b},
			IP4: netip.AddrFrom4([4]byte{192, 168, 50, 11 + byte(i)}),
			IP6: netip.MustParseAddr(fmt.Sprintf("2001:db8:50::%x", 0x11+i))}
		s.Nodes = append(s.Nodes, n)
		attach(ns, fmt.Sprintf("p%d", i+1), n.MAC, n.IP4, n.IP6)
	}
	for _, f := range steps {
		if err := f(); err != nil {
			return nil, err
		}
	}
	if opts.APIServer != "" {
		for _, n := range s.Nodes {
			if n.Forwarder, err = l.Forward(n.NS, opts.APIServer, opts.APIServer); err != nil {
				return nil, fmt.Errorf("API server forwarder for %s: %w", n.Name, err)
			}
		}
	}
	return s, ctx.Err()
}

// Node returns the node with the given Kubernetes name.
func (s *L2) Node(name string) *L2Node {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// NodeByMAC returns the node whose segment interface has mac.
func (s *L2) NodeByMAC(mac net.HardwareAddr) *L2Node {
	for _, n := range s.Nodes {
		if n.MAC.String() == mac.String() {
			return n
		}
	}
	return nil
}

var arpingReply = regexp.MustCompile(`reply from \S+ \[([0-9A-Fa-f:]{17})\]`)

// Arping runs iputils arping from the client (count requests, one per
// second, waiting up to count+1 s) and returns the MAC of every reply in
// order, and its output.
func (s *L2) Arping(ctx context.Context, ip netip.Addr, count int) ([]net.HardwareAddr, string, error) {
	if _, err := exec.LookPath("arping"); err != nil {
		return nil, "", fmt.Errorf("arping (Debian iputils-arping) is needed: %w", err)
	}
	// arping exits 1 when nothing answered: the output says so.
	out, _ := s.Lab.Exec(ctx, s.Client, "arping", "-I", L2Interface, "-c", fmt.Sprint(count), "-w", fmt.Sprint(count+1), ip.String())
	var macs []net.HardwareAddr
	for _, m := range arpingReply.FindAllStringSubmatch(out, -1) {
		mac, err := net.ParseMAC(m[1])
		if err != nil {
			return nil, out, err
		}
		macs = append(macs, mac)
	}
	return macs, out, ctx.Err()
}

var ndiscTarget = regexp.MustCompile(`Target link-layer address: ([0-9A-Fa-f:]{17})`)

// Ndisc6 solicits ip from the client with ndisc6, collecting every
// advertisement for a second per try, and returns the MACs advertised in
// order, and its output.
func (s *L2) Ndisc6(ctx context.Context, ip netip.Addr) ([]net.HardwareAddr, string, error) {
	if _, err := exec.LookPath("ndisc6"); err != nil {
		return nil, "", fmt.Errorf("ndisc6 (Debian ndisc6) is needed: %w", err)
	}
	out, _ := s.Lab.Exec(ctx, s.Client, "ndisc6", "-m", "-n", "-r", "3", "-w", "1000", ip.String(), L2Interface)
	var macs []net.HardwareAddr
	for _, m := range ndiscTarget.FindAllStringSubmatch(out, -1) {
		mac, err := net.ParseMAC(m[1])
		if err != nil {
			return nil, out, err
		}
		macs = append(macs, mac)
	}
	return macs, out, ctx.Err()
}

// ClientNeighbor returns the client kernel's neighbour entry for ip: its
// MAC ("" if none) and state (REACHABLE, STALE, ...).
func (s *L2) ClientNeighbor(ctx context.Context, ip netip.Addr) (string, string, error) {
	out, err := s.Lab.Exec(ctx, s.Client, "ip", "neigh", "show", ip.String(), "dev", L2Interface)
	if err != nil {
		return "", "", err
	}
	// "192.168.50.100 lladdr 02:00:00:00:50:11 REACHABLE"; the state
	// comes last.
	f := strings.Fields(out)
	if len(f) < 2 {
		return "", "", nil
	}
	var mac string
	if i := slices.Index(f, "lladdr"); i >= 0 && i+1 < len(f) {
		mac = f[i+1]
	}
	return mac, f[len(f)-1], nil
}

// ClientSend makes the client's kernel send one UDP datagram to ip (port
// 9, discard), resolving the address through ARP/NDP like any traffic
// would. The receiving node drops it.
func (s *L2) ClientSend(ip netip.Addr) error {
	return InNS(s.Client, func() error {
		c, err := net.Dial("udp", netip.AddrPortFrom(ip, 9).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("openelb layer-2 test"))
		return err
	})
}

// ARPKind says what an ARPSeen packet is.
type ARPKind string

// ARP packets an ARPWatch records.
const (
	// ARPReply: a node says ip is at MAC, to one asker.
	ARPReply ARPKind = "reply"
	// ARPGratuitous: a node announces ip is at MAC to the whole segment.
	ARPGratuitous ARPKind = "gratuitous"
	// ARPRequest: a host (MAC) asks who has ip, e.g. the client's kernel
	// re-validating its neighbour entry.
	ARPRequest ARPKind = "request"
)

// ARPSeen is one ARP packet about ip seen on the client's interface.
type ARPSeen struct {
	At   time.Time
	Kind ARPKind
	MAC  net.HardwareAddr // the sender's: the MAC claimed, or the asker
}

// ARPWatch records, from the client's interface, every ARP packet about
// one IPv4 address (replies, gratuitous ARPs, requests), and optionally
// sends a request for it every interval (a prober, like arping in a loop).
// It sends nothing else and does not touch the client kernel's neighbour
// table (though the kernel, like any host, learns from the replies it
// receives). Its own requests are not recorded.
type ARPWatch struct {
	ip      netip.Addr
	c       *arp.Client
	probing atomic.Bool
	done    chan struct{}
	wg      sync.WaitGroup

	mu   sync.Mutex
	seen []ARPSeen
	sent []time.Time
}

// WatchARP starts an ARPWatch for ip on the client; probeEvery 0 only
// listens. The lab stops it on Close.
func (s *L2) WatchARP(ip netip.Addr, probeEvery time.Duration) (*ARPWatch, error) {
	w := &ARPWatch{ip: ip, done: make(chan struct{})}
	err := InNS(s.Client, func() error {
		ifi, err := net.InterfaceByName(L2Interface)
		if err != nil {
			return err
		}
		w.c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ARP socket in the client: %w", err)
	}
	w.wg.Add(1)
	go w.read()
	if probeEvery > 0 {
		w.probing.Store(true)
		w.wg.Add(1)
		go w.probe(probeEvery)
	}
	s.Lab.OnClose(func() error { w.Close(); return nil })
	return w, nil
}

// ReadARP hands every ARP packet c receives to f until done is closed,
// checking done at least every 200 ms; read errors (the deadline) are
// skipped.
func ReadARP(c *arp.Client, done <-chan struct{}, f func(*arp.Packet)) {
	for {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		p, _, err := c.Read()
		select {
		case <-done:
			return
		default:
		}
		if err == nil {
			f(p)
		}
	}
}

func (w *ARPWatch) read() {
	defer w.wg.Done()
	ReadARP(w.c, w.done, func(p *arp.Packet) {
		var kind ARPKind
		switch {
		case p.SenderIP == w.ip && p.Operation == arp.OperationReply:
			kind = ARPReply
		case p.SenderIP == w.ip && p.TargetIP == w.ip && p.Operation == arp.OperationRequest:
			kind = ARPGratuitous
		case p.TargetIP == w.ip && p.Operation == arp.OperationRequest && !w.probing.Load():
			kind = ARPRequest
		default:
			return
		}
		w.mu.Lock()
		w.seen = append(w.seen, ARPSeen{At: time.Now(), Kind: kind, MAC: p.SenderHardwareAddr})
		w.mu.Unlock()
	})
}

func (w *ARPWatch) probe(every time.Duration) {
	defer w.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		w.mu.Lock()
		w.sent = append(w.sent, time.Now())
		w.mu.Unlock()
		_ = w.c.Request(w.ip)
		select {
		case <-w.done:
			return
		case <-t.C:
		}
	}
}

// Close stops the watch. Idempotent.
func (w *ARPWatch) Close() {
	select {
	case <-w.done:
		return
	default:
	}
	close(w.done)
	w.wg.Wait()
	_ = w.c.Close()
}

// Seen returns what was seen at or after since.
func (w *ARPWatch) Seen(since time.Time) []ARPSeen {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, _ := slices.BinarySearchFunc(w.seen, since, func(s ARPSeen, t time.Time) int { return s.At.Compare(t) })
	return slices.Clone(w.seen[i:])
}

// WaitOther waits until, after since, a reply or gratuitous ARP claims ip
// for a MAC other than old, and returns it.
func (w *ARPWatch) WaitOther(ctx context.Context, since time.Time, old net.HardwareAddr) (ARPSeen, error) {
	for {
		for _, s := range w.Seen(since) {
			if s.Kind != ARPRequest && s.MAC.String() != old.String() {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			return ARPSeen{}, fmt.Errorf("no MAC other than %s claimed %s: %w", old, w.ip, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// WaitReply waits for a reply (not a gratuitous ARP) after since and
// returns it.
func (w *ARPWatch) WaitReply(ctx context.Context, since time.Time) (ARPSeen, error) {
	for {
		for _, s := range w.Seen(since) {
			if s.Kind == ARPReply {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			return ARPSeen{}, fmt.Errorf("no ARP reply for %s: %w", w.ip, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// SplitRounds returns the probe rounds in [from, to) whose requests were
// answered by more than one MAC (two nodes answering at once), as
// human-readable lines.
func (w *ARPWatch) SplitRounds(from, to time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for i, start := range w.sent {
		if start.Before(from) || !start.Before(to) {
			continue
		}
		end := to
		if i+1 < len(w.sent) {
			end = w.sent[i+1]
		}
		macs := map[string]bool{}
		for _, s := range w.seen {
			if s.Kind == ARPReply && !s.At.Before(start) && s.At.Before(end) {
				macs[s.MAC.String()] = true
			}
		}
		if len(macs) > 1 {
			out = append(out, fmt.Sprintf("request at %s answered by %v", start.Format("15:04:05.000"), slices.Sorted(maps.Keys(macs))))
		}
	}
	return out
}

// NodeMetric reads one sample of a Prometheus metric from the /metrics
// endpoint at addr inside ns (e.g. a speaker's health address on the
// node's loopback): the value of the first line starting with series.
func NodeMetric(ctx context.Context, ns, addr, series string) (float64, bool, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, _, a string) (net.Conn, error) { return DialTCP(ns, a, 2*time.Second) },
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, series) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric line %q: %w", line, err)
		}
		return v, true, nil
	}
	return 0, false, sc.Err()
}
