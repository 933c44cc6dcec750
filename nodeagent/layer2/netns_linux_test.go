//go:build linux

package layer2

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.org/x/sys/unix"
)

// lab is a "node" and a "client" network namespace joined by a veth pair,
// created for one test run (names carry a random suffix) and deleted by
// t.Cleanup. All traffic stays between the two.
type lab struct {
	nodeNS, clientNS string
	nodeIf, clientIf string
}

var (
	labNode4   = netip.MustParsePrefix("198.51.100.1/24")
	labClient4 = netip.MustParsePrefix("198.51.100.2/24")
	labNode6   = netip.MustParsePrefix("2001:db8:5::1/64")
	labClient6 = netip.MustParsePrefix("2001:db8:5::2/64")
)

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create network namespaces (make test runs as root)")
	}
	for _, tool := range []string{"ip", "arping", "ndisc6"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s (Debian packages iproute2, iputils-arping, ndisc6)", tool)
		}
	}
	suffix := randomSuffix(t)
	l := &lab{
		nodeNS: "l2node-" + suffix, clientNS: "l2client-" + suffix,
		nodeIf: "l2n" + suffix, clientIf: "l2c" + suffix,
	}
	for _, ns := range []string{l.nodeNS, l.clientNS} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { runQuiet("ip", "netns", "del", ns) })
	}
	run(t, "ip", "link", "add", l.nodeIf, "netns", l.nodeNS, "type", "veth", "peer", "name", l.clientIf, "netns", l.clientNS)
	l.configure(t, l.nodeNS, l.nodeIf, labNode4, labNode6)
	l.configure(t, l.clientNS, l.clientIf, labClient4, labClient6)
	l.waitAddressesReady(t)
	return l
}

// waitAddressesReady waits for the link-local addresses to finish duplicate
// address detection (about a second after link up). Until then the node's
// kernel has no usable source to resolve the solicitor's MAC with, so its
// first advertisement is late: an artefact of a fresh namespace, not what a
// long-running node sees.
func (l *lab) waitAddressesReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, side := range [][2]string{{l.nodeNS, l.nodeIf}, {l.clientNS, l.clientIf}} {
		for strings.TrimSpace(run(t, "ip", "-n", side[0], "-6", "addr", "show", "dev", side[1], "tentative")) != "" {
			if time.Now().After(deadline) {
				t.Fatalf("addresses of %s in %s still tentative", side[1], side[0])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (l *lab) configure(t *testing.T, ns, ifname string, p4, p6 netip.Prefix) {
	t.Helper()
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns, "addr", "add", p4.String(), "dev", ifname)
	run(t, "ip", "-n", ns, "addr", "add", p6.String(), "dev", ifname, "nodad")
	run(t, "ip", "-n", ns, "link", "set", ifname, "up")
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := execOut(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func runQuiet(name string, args ...string) { _, _ = execOut(name, args...) }

// execOut runs a command with a timeout, so a hung client tool cannot hang
// the test; on timeout exec kills exactly the process it started.
func execOut(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// inNetns runs f on a locked OS thread moved into the named namespace.
// Sockets created there stay in it when the thread moves back, and
// netlink lookups (interface addresses, routes) follow the thread, which is
// why New and SetAnswers run here and Run, Announce can run anywhere. If
// the thread cannot move back it stays locked and the runtime discards it.
func inNetns(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		err = f()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

var (
	arpingReply = regexp.MustCompile(`reply from \S+ \[([0-9A-Fa-f:]{17})\]`)
	ndisc6Reply = regexp.MustCompile(`Target link-layer address: ([0-9A-Fa-f:]{17})`)
	neighLLAddr = regexp.MustCompile(`lladdr ([0-9a-f:]{17})`)
)

// arping asks for ip from the client with iputils arping and returns the
// MAC of the reply, or nil if none came.
func (l *lab) arping(t *testing.T, ip netip.Addr) net.HardwareAddr {
	t.Helper()
	out, _ := execOut("ip", "netns", "exec", l.clientNS, "arping", "-c", "1", "-w", "2", "-I", l.clientIf, ip.String())
	return parseMAC(t, arpingReply, out)
}

// ndisc6 solicits ip from the client and returns the advertised MAC, or nil.
func (l *lab) ndisc6(t *testing.T, ip netip.Addr) net.HardwareAddr {
	t.Helper()
	out, _ := execOut("ip", "netns", "exec", l.clientNS, "ndisc6", "-1", "-r", "2", ip.String(), l.clientIf)
	return parseMAC(t, ndisc6Reply, out)
}

func parseMAC(t *testing.T, re *regexp.Regexp, out []byte) net.HardwareAddr {
	t.Helper()
	m := re.FindSubmatch(out)
	if m == nil {
		t.Logf("no reply:\n%s", out)
		return nil
	}
	mac, err := net.ParseMAC(string(m[1]))
	if err != nil {
		t.Fatalf("parsing %q: %v", m[1], err)
	}
	return mac
}

// neighbour returns the MAC of the client's kernel neighbour entry for ip.
func (l *lab) neighbour(t *testing.T, ip netip.Addr) net.HardwareAddr {
	t.Helper()
	out := run(t, "ip", "-n", l.clientNS, "neigh", "show", ip.String(), "dev", l.clientIf)
	m := neighLLAddr.FindStringSubmatch(out)
	if m == nil {
		return nil
	}
	mac, _ := net.ParseMAC(m[1])
	return mac
}

// waitNeighbour polls the client's entry for ip until it is want, and
// returns how long that took.
func (l *lab) waitNeighbour(t *testing.T, ip netip.Addr, want net.HardwareAddr, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := l.neighbour(t, ip)
		if bytes.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("client's neighbour entry for %s is %v after %v, want %s", ip, got, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sendUDP sends one datagram from the client to ip, which makes the
// client's kernel resolve ip (ARP or NDP) and cache the answer.
func (l *lab) sendUDP(t *testing.T, ip netip.Addr) {
	t.Helper()
	err := inNetns(l.clientNS, func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("layer2 test"))
		return err
	})
	if err != nil {
		t.Fatalf("sending UDP to %s from the client: %v", ip, err)
	}
}

// TestInNetworkNamespaces runs the real Responder in a "node" namespace and
// the real client tools (arping, ndisc6, the kernel's own neighbour
// resolution) in a "client" namespace on the other end of a veth pair.
func TestInNetworkNamespaces(t *testing.T) {
	l := newLab(t)
	foreignMAC := mustMAC("02:00:5e:10:00:02") // "another node" for externalTrafficPolicy Local
	var (
		vip4      = netip.MustParseAddr("198.51.100.10")
		vip4Local = netip.MustParseAddr("198.51.100.11")
		vip6      = netip.MustParseAddr("2001:db8:5::10")
		vip6Local = netip.MustParseAddr("2001:db8:5::11")
	)

	var (
		ifi *net.Interface
		r   *Responder
	)
	setAnswers := func(answers map[netip.Addr]net.HardwareAddr) error {
		return inNetns(l.nodeNS, func() error { return r.SetAnswers(answers) })
	}

	t.Run("ResolveInterface", func(t *testing.T) {
		// A second veth pair inside the node, left down.
		run(t, "ip", "-n", l.nodeNS, "link", "add", "l2d"+l.nodeIf[3:], "type", "veth", "peer", "name", "l2e"+l.nodeIf[3:])
		checks := map[string]error{
			"can_reach:" + labClient4.Addr().String(): nil,
			"can_reach:" + labClient6.Addr().String(): nil,
			l.nodeIf:                                nil,
			"can_reach:" + labNode4.Addr().String(): ErrLoopback, // a local address routes via lo
			"can_reach:203.0.113.1":                 ErrNoRoute,  // no default route in the lab
			"l2d" + l.nodeIf[3:]:                    ErrInterfaceDown,
		}
		err := inNetns(l.nodeNS, func() error {
			for spec, want := range checks {
				got, err := ResolveInterface(spec)
				if !errors.Is(err, want) {
					return fmt.Errorf("ResolveInterface(%q) error = %v, want %v", spec, err, want)
				}
				if want == nil && got.Name != l.nodeIf {
					return fmt.Errorf("ResolveInterface(%q) = %s, want %s", spec, got.Name, l.nodeIf)
				}
				if want != nil {
					t.Logf("ResolveInterface(%q): %v", spec, err)
				}
			}
			var err error
			ifi, err = ResolveInterface("can_reach:" + labClient4.Addr().String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	if ifi == nil {
		t.FailNow()
	}

	err := inNetns(l.nodeNS, func() error {
		var err error
		r, err = New(ifi, Options{Logger: testr.NewWithOptions(t, testr.Options{Verbosity: 1})})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	t.Run("InterfacePrefixes", func(t *testing.T) {
		var prefixes []netip.Prefix
		if err := inNetns(l.nodeNS, func() (err error) { prefixes, err = InterfacePrefixes(ifi); return err }); err != nil {
			t.Fatal(err)
		}
		for _, want := range []netip.Prefix{labNode4, labNode6} {
			if !containsPrefix(prefixes, want) {
				t.Errorf("InterfacePrefixes = %v, want %v among them", prefixes, want)
			}
		}
	})

	t.Run("OutOfSubnetRejected", func(t *testing.T) {
		outside := netip.MustParseAddr("203.0.113.10")
		err := setAnswers(map[netip.Addr]net.HardwareAddr{outside: ifi.HardwareAddr})
		if !errors.Is(err, ErrOutsideSubnets) || !strings.Contains(err.Error(), outside.String()) {
			t.Fatalf("SetAnswers(%s) = %v, want ErrOutsideSubnets naming it", outside, err)
		}
		t.Logf("SetAnswers(%s): %v", outside, err)
	})

	answers := map[netip.Addr]net.HardwareAddr{
		vip4: ifi.HardwareAddr, vip4Local: foreignMAC,
		vip6: ifi.HardwareAddr, vip6Local: foreignMAC,
	}
	if err := setAnswers(answers); err != nil {
		t.Fatal(err)
	}

	t.Run("ArpingGetsConfiguredMAC", func(t *testing.T) {
		for _, ip := range []netip.Addr{vip4, vip4Local} {
			if got := l.arping(t, ip); !bytes.Equal(got, answers[ip]) {
				t.Errorf("arping %s: reply MAC %v, want %s", ip, got, answers[ip])
			}
		}
		if got := l.arping(t, netip.MustParseAddr("198.51.100.12")); got != nil {
			t.Errorf("arping for an IP not answered got a reply from %s", got)
		}
	})

	// After the first reply iputils arping sends its next probes unicast to
	// the MAC it learned, as a client re-validating its cache does.
	t.Run("UnicastARPRequestAnswered", func(t *testing.T) {
		out, err := execOut("ip", "netns", "exec", l.clientNS, "arping", "-c", "2", "-w", "3", "-I", l.clientIf, vip4.String())
		if err != nil || !strings.Contains(string(out), "Sent 2 probes (1 broadcast(s))") || !strings.Contains(string(out), "Received 2 response(s)") {
			t.Fatalf("want 2 replies to 1 broadcast and 1 unicast probe (err %v):\n%s", err, out)
		}
	})

	t.Run("Ndisc6GetsConfiguredMAC", func(t *testing.T) {
		for _, ip := range []netip.Addr{vip6, vip6Local} {
			if got := l.ndisc6(t, ip); !bytes.Equal(got, answers[ip]) {
				t.Errorf("ndisc6 %s: advertised MAC %v, want %s", ip, got, answers[ip])
			}
		}
	})

	// The client's kernel resolves the VIP through the responder, then a
	// new leader's MAC (here: the other node's) is announced; the client's
	// entry must move with the first announcement, not after it expires.
	for _, ip := range []netip.Addr{vip4, vip6} {
		t.Run("AnnounceMovesNeighbourEntry/"+ip.String(), func(t *testing.T) {
			l.sendUDP(t, ip)
			l.waitNeighbour(t, ip, ifi.HardwareAddr, 3*time.Second)

			moved := map[netip.Addr]net.HardwareAddr{}
			for k, v := range answers {
				moved[k] = v
			}
			moved[ip] = foreignMAC
			if err := setAnswers(moved); err != nil {
				t.Fatal(err)
			}
			announced := make(chan error, 1)
			go func() { announced <- r.Announce(context.Background(), []netip.Addr{ip}) }()
			took := l.waitNeighbour(t, ip, foreignMAC, time.Second)
			t.Logf("client's entry for %s moved to %s after %v", ip, foreignMAC, took)
			if err := <-announced; err != nil {
				t.Fatalf("Announce: %v", err)
			}
			if err := setAnswers(answers); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("RemovalStopsAnswers", func(t *testing.T) {
		if err := setAnswers(nil); err != nil {
			t.Fatal(err)
		}
		if got := l.arping(t, vip4); got != nil {
			t.Errorf("arping %s after removal: reply from %s", vip4, got)
		}
		if got := l.ndisc6(t, vip6); got != nil {
			t.Errorf("ndisc6 %s after removal: reply from %s", vip6, got)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		s := r.Stats()
		t.Logf("%+v", s)
		if s.ARPRequestsAnswered < 3 || s.NeighborSolicitationsAnswered < 3 ||
			s.GratuitousARPsSent != DefaultAnnounceCount || s.UnsolicitedNAsSent != DefaultAnnounceCount || s.SendErrors != 0 {
			t.Errorf("stats %+v: want >= 3 answers per family, %d announcements each, no errors", s, DefaultAnnounceCount)
		}
	})
}

func containsPrefix(ps []netip.Prefix, want netip.Prefix) bool {
	for _, p := range ps {
		if p == want {
			return true
		}
	}
	return false
}
