package netlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FRRDir is where Debian installs the FRR daemons.
const FRRDir = "/usr/lib/frr"

// FRR is one FRR instance (zebra, bgpd and optionally bfdd) in a namespace,
// with its own runtime directory so instances never share a socket.
type FRR struct {
	Name   string
	NS     string
	dir    string
	Daemon map[string]*Proc
}

// StartFRR starts zebra, bgpd and bfdd inside ns with the given bgpd
// configuration (an integrated frr.conf is written for every daemon), in
// the foreground so the lab owns their PIDs. It returns once vtysh answers.
func (l *Lab) StartFRR(ctx context.Context, name, ns, config string) (*FRR, error) {
	dir := filepath.Join(l.dir, "frr-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "frr.conf")
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		return nil, err
	}
	if err := chownFRR(dir, conf); err != nil {
		return nil, err
	}
	r := &FRR{Name: name, NS: ns, dir: dir, Daemon: map[string]*Proc{}}
	common := func(daemon string) []string {
		return []string{
			"--vty_socket", dir,
			"-z", filepath.Join(dir, "zserv.api"),
			"-i", filepath.Join(dir, daemon+".pid"),
			"-f", conf,
			"-u", "frr", "-g", "frr",
			"--log", "file:" + filepath.Join(dir, daemon+".log"),
		}
	}
	// zebra first, and fully up (answering on its VTY) before the others
	// connect: a bfdd that connects earlier misses interface announcements
	// and then drops every BFD packet ("no session found" for the ifindex).
	for _, d := range []string{"zebra", "bfdd", "bgpd"} {
		// -P 0: no VTY TCP port; vtysh talks over the unix sockets in dir.
		args := append(common(d), "-P", "0")
		p, err := l.Start(ns, name+"-"+d, filepath.Join(FRRDir, d), args...)
		if err != nil {
			return nil, err
		}
		r.Daemon[d] = p
		if d == "zebra" {
			if err := waitFile(ctx, filepath.Join(dir, "zserv.api"), 10*time.Second); err != nil {
				return nil, fmt.Errorf("%s zebra: %w\n%s", name, err, p.LogTail(20))
			}
			if err := r.waitDaemon(ctx, "zebra", "show interface brief"); err != nil {
				return nil, err
			}
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := r.Vtysh(ctx, "show bgp summary json")
		if err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: vtysh never answered: %w", name, err)
		}
		for d, p := range r.Daemon {
			if p.Exited() {
				return nil, fmt.Errorf("%s %s exited: %s", name, d, p.LogTail(20))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitDaemon waits until one daemon answers a command on its VTY.
func (r *FRR) waitDaemon(ctx context.Context, daemon, cmd string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", r.dir, "-d", daemon, "-c", cmd).CombinedOutput()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s not answering: %w: %s", r.Name, daemon, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func chownFRR(paths ...string) error {
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("FRR user (is frr installed?): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range paths {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

func waitFile(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Vtysh runs one vtysh command against this instance.
func (r *FRR) Vtysh(ctx context.Context, cmds ...string) (string, error) {
	args := []string{"--vty_socket", r.dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.CommandContext(ctx, "vtysh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %s on %s: %w: %s", strings.Join(cmds, "; "), r.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// JSON runs a `... json` show command and decodes its output into v.
func (r *FRR) JSON(ctx context.Context, cmd string, v any) error {
	out, err := r.Vtysh(ctx, cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("decoding %q from %s: %w: %.300s", cmd, r.Name, err, out)
	}
	return nil
}

// Configure applies configuration commands (e.g. "router bgp 65101",
// "neighbor X shutdown") in configure mode.
func (r *FRR) Configure(ctx context.Context, lines ...string) error {
	_, err := r.Vtysh(ctx, append([]string{"configure terminal"}, lines...)...)
	return err
}

// Neighbor is what the tests read from `show bgp neighbors json`.
type Neighbor struct {
	State    string `json:"bgpState"`
	RemoteAS uint32 `json:"remoteAs"`
	// HostLocal etc. are not needed; add fields as tests need them.
}

// Neighbors returns BGP neighbors by address (dynamic ones included).
func (r *FRR) Neighbors(ctx context.Context) (map[string]Neighbor, error) {
	var m map[string]Neighbor
	if err := r.JSON(ctx, "show bgp neighbors json", &m); err != nil {
		return nil, err
	}
	return m, nil
}

// BGPPath is one path of a prefix in a router's BGP table.
type BGPPath struct {
	NextHop string
	Peer    string // the neighbor it was learned from
	// ASPath is "" for an empty AS path (FRR writes "Local").
	ASPath      string
	Communities string // FRR's text form, e.g. "65000:100 no-export"
	Large       string // large communities, e.g. "65000:1:2"
	// Extended is FRR's text of the extended communities, e.g.
	// "LB:23456:125000000 (1000.000 Mbps)".
	Extended  string
	LocalPref *uint32
}

func (p BGPPath) String() string {
	lp := "-"
	if p.LocalPref != nil {
		lp = fmt.Sprint(*p.LocalPref)
	}
	return fmt.Sprintf("{via %s from %s aspath %q communities %q large %q extended %q localpref %s}", p.NextHop, p.Peer, p.ASPath, p.Communities, p.Large, p.Extended, lp)
}

// Paths returns every path of prefix in the BGP table (nil when absent).
func (r *FRR) Paths(ctx context.Context, prefix string) ([]BGPPath, error) {
	fam := "ipv4"
	if strings.Contains(prefix, ":") {
		fam = "ipv6"
	}
	type text struct {
		String string `json:"string"`
	}
	var out struct {
		Paths []struct {
			NextHops []struct {
				IP string `json:"ip"`
			} `json:"nexthops"`
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
			ASPath struct {
				String string `json:"string"`
				Length int    `json:"length"`
			} `json:"aspath"`
			Community      text    `json:"community"`
			LargeCommunity text    `json:"largeCommunity"`
			ExtCommunity   text    `json:"extendedCommunity"`
			LocPrf         *uint32 `json:"locPrf"`
		} `json:"paths"`
	}
	if err := r.JSON(ctx, fmt.Sprintf("show bgp %s unicast %s json", fam, prefix), &out); err != nil {
		return nil, err
	}
	var paths []BGPPath
	for _, p := range out.Paths {
		bp := BGPPath{Peer: p.Peer.PeerID, Communities: p.Community.String, Large: p.LargeCommunity.String, Extended: p.ExtCommunity.String, LocalPref: p.LocPrf}
		if len(p.NextHops) > 0 {
			bp.NextHop = p.NextHops[0].IP
		}
		if p.ASPath.Length > 0 {
			bp.ASPath = p.ASPath.String
		}
		paths = append(paths, bp)
	}
	return paths, nil
}

// NextHopsFrom returns the next hops of the paths of prefix learned from
// neighbors inside peers (e.g. the speakers' subnet), leaving out what the
// router learned from the rest of the fabric.
func (r *FRR) NextHopsFrom(ctx context.Context, prefix string, peers netip.Prefix) ([]string, error) {
	paths, err := r.Paths(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var hops []string
	for _, p := range paths {
		if a, err := netip.ParseAddr(p.Peer); err == nil && peers.Contains(a) {
			hops = append(hops, p.NextHop)
		}
	}
	return hops, nil
}

// KernelNextHops returns the next hops of the kernel's route to prefix in
// the router's namespace (several for ECMP; nil when there is no route).
func (l *Lab) KernelNextHops(ctx context.Context, ns, prefix string) ([]string, error) {
	w, err := l.KernelWeights(ctx, ns, prefix)
	if err != nil {
		return nil, err
	}
	hops := make([]string, len(w))
	for i, h := range w {
		hops[i] = h.Gateway
	}
	return hops, nil
}

// WeightedHop is one next hop of a kernel route with its ECMP weight.
type WeightedHop struct {
	Gateway string
	Weight  int // 1 unless the route is weighted
}

// KernelWeights returns the next hops of the kernel's route to prefix with
// their weights.
func (l *Lab) KernelWeights(ctx context.Context, ns, prefix string) ([]WeightedHop, error) {
	fam := "-4"
	if strings.Contains(prefix, ":") {
		fam = "-6"
	}
	out, err := l.Exec(ctx, ns, "ip", "-j", fam, "route", "show", prefix)
	if err != nil {
		return nil, err
	}
	var routes []struct {
		Gateway  string `json:"gateway"`
		NextHops []struct {
			Gateway string `json:"gateway"`
			Weight  int    `json:"weight"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return nil, fmt.Errorf("decoding routes: %w: %s", err, out)
	}
	var hops []WeightedHop
	for _, r := range routes {
		if r.Gateway != "" {
			hops = append(hops, WeightedHop{Gateway: r.Gateway, Weight: 1})
		}
		for _, nh := range r.NextHops {
			hops = append(hops, WeightedHop{Gateway: nh.Gateway, Weight: max(nh.Weight, 1)})
		}
	}
	return hops, nil
}

func sleep(ms int) <-chan time.Time { return time.After(time.Duration(ms) * time.Millisecond) }

// BFDStatus returns the state of the BFD session with peer ("up", "down",
// "init"; "" when there is none).
func (r *FRR) BFDStatus(ctx context.Context, peer string) (string, error) {
	var peers []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	if err := r.JSON(ctx, "show bfd peers json", &peers); err != nil {
		return "", err
	}
	for _, p := range peers {
		if p.Peer == peer {
			return p.Status, nil
		}
	}
	return "", nil
}
