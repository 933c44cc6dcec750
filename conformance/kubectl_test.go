package conformance

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// updateGolden rewrites the golden files of TestKubectlOpenELB from the
// run instead of comparing (also OPENELB_UPDATE_GOLDEN=1):
//
//	go test -count=1 -run TestKubectlOpenELB ./conformance/ -update
var updateGolden = flag.Bool("update", false, "rewrite conformance/testdata/kubectl/*.golden from this run")

// kubectlL2Pool is a layer-2 pool on leaf1's rack segment: master1 is the
// only node that can answer it (worker-p002's eth0 is in another subnet,
// which its speaker reports), so which node answers is known.
const kubectlL2Pool = "l2-rack1"

// seedIface is the seed nodes' interface on their rack segment.
const seedIface = "eth0"

// TestKubectlOpenELB runs the built bin/kubectl-openelb against seed 000
// (real FRR leaves and spine, real speakers on master1 and worker-p002,
// the guide's labels: worker-p001 in no rack) with a BGP Service, a
// layer-2 Service and a Service whose pool does not exist, and compares
// what it prints with testdata/kubectl/*.golden once the lab has
// converged. What the golden files hold was checked against the routers
// and the segment first: leaf1 and leaf2 hold the paths the tree shows,
// every session it calls established is, and the node it says answers
// the layer-2 address is the one whose MAC an ARP request gets back.
func TestKubectlOpenELB(t *testing.T) {
	bin, err := harness.ProjectBinary("kubectl-openelb")
	if err != nil {
		t.Fatal(err)
	}
	b := newBGPLab(t, seedlab.Options{Leaf2Password: leaf2Password})
	ctx := context.Background()
	b.configureSeed()
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	b.waitSession("speaker up", b.topo.Leaf1, "192.168.0.3", true)
	b.waitSession("speaker up with the password from the Secret", b.topo.Leaf2, "192.168.1.2", true)
	b.createNginx()

	b.eip(kubectlL2Pool, "192.168.0.200-192.168.0.209", func(e *v1alpha2.Eip) {
		e.Spec.Protocol, e.Spec.Interface = v1alpha2.ProtocolLayer2, seedIface
	})
	b.create(newService("default", "web", annotate(v1alpha2.AnnotationEip, kubectlL2Pool)))
	vip := b.waitIPs("default", "web", 1, ipTimeout)[0]
	if vip.String() != "192.168.0.200" {
		t.Fatalf("web got %s, want the pool's first address 192.168.0.200", vip)
	}
	b.create(newService("default", "orphan", annotate(v1alpha2.AnnotationEip, "missing-pool")))
	b.waitEvent("default", "orphan", "PoolNotFound", ipTimeout)
	db := newService("default", "db")
	db.Spec.Type, db.Spec.AllocateLoadBalancerNodePorts = v1.ServiceTypeClusterIP, nil
	b.create(db)

	// The lab's truth, from the routers and the segment.
	b.waitPaths("guide labels", b.topo.Leaf1, seedPrefix, "192.168.0.3")
	b.waitPaths("guide labels", b.topo.Leaf2, seedPrefix, "192.168.1.2")
	b.waitAnnouncing("master1", 1, 1)
	b.waitAnnouncing("worker-p002", 1, 1)
	asker := &netlab.L2{Lab: b.net, Client: b.topo.Node("worker-p001").NS}
	arp, err := asker.WatchARP(vip, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer arp.Close()
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	reply, err := arp.WaitReply(actx, time.Now())
	if err != nil {
		t.Fatalf("nobody answers ARP for %s: %v", vip, err)
	}
	// What differs from lab to lab: the nodes' random MACs and the IPv6
	// link-local addresses derived from them (a speaker's problem lists
	// its interface's prefixes).
	volatile := map[string]string{}
	for _, node := range []string{"master1", "worker-p002"} {
		mac, linkLocal := nodeAddrs(t, b.topo.Node(node).NS)
		volatile[mac] = "<MAC of " + node + ">"
		for _, a := range linkLocal {
			volatile[a] = "<link-local of " + node + ">"
		}
	}
	if volatile[reply.MAC.String()] != "<MAC of master1>" {
		t.Fatalf("ARP for %s answered by %s, want master1's MAC (%v)", vip, reply.MAC, volatile)
	}

	kubeconfig := "--kubeconfig=" + b.cp.Kubeconfig
	plugin := func(args ...string) func() cliRun { return func() cliRun { return runCLI(t, bin, nil, args...) } }
	// Through kubectl, as users run it: kubectl finds kubectl-openelb on
	// the PATH and hands it the arguments after "openelb".
	viaKubectl := func(args ...string) func() cliRun {
		return func() cliRun {
			env := []string{"PATH=" + filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH")}
			return runCLI(t, filepath.Join(b.cp.BinDir(), "kubectl"), env, append([]string{"openelb"}, args...)...)
		}
	}
	norm := func(s string) string { return normalizeKubectl(s, volatile) }

	checkGolden(t, "status-default", norm, plugin("status", "-n", "default", kubeconfig))
	checkGolden(t, "status-nginx", norm, viaKubectl("status", "nginx", kubeconfig))
	checkGolden(t, "pools", norm, viaKubectl("pools", kubeconfig))
	checkGolden(t, "errors", norm, func() cliRun {
		var all cliRun
		for _, args := range [][]string{
			{"status", "db"},
			{"status", "nosuch"},
			{"status", "-n", "kube-system"},
		} {
			r := runCLI(t, bin, nil, append(args, kubeconfig)...)
			all.stdout += fmt.Sprintf("$ kubectl openelb %s\n%s%sexit %d\n", strings.Join(args, " "), r.stdout, r.stderr, r.code)
		}
		return all
	})

	// The MAC the tree gives for the answering node is the one the
	// segment sees (the golden file names it after its node).
	out := runCLI(t, bin, nil, "status", "web", kubeconfig).stdout
	if want := fmt.Sprintf("master1: answering (MAC %s)", reply.MAC); !strings.Contains(out, want) {
		t.Errorf("status web does not say %q:\n%s", want, out)
	}
}

// cliRun is one run of a command.
type cliRun struct {
	stdout, stderr string
	code           int
}

func runCLI(t *testing.T, bin string, env []string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %s %s: %v", bin, strings.Join(args, " "), err)
	}
	return cliRun{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

var (
	// ageRE matches an age as kubectl prints it (75s, 3m20s, 5h, 2d3h).
	ageRE = regexp.MustCompile(`\bfor (\d+[smhdy])+\b`)
	// kubeconfigRE matches the lab's kubeconfig path, should it appear.
	kubeconfigRE = regexp.MustCompile(`--kubeconfig=\S+`)
)

// normalizeKubectl replaces what changes from run to run: session ages,
// and each of the nodes' MACs and link-local addresses by a name that says
// whose it is (volatile maps them), so the golden file still shows that
// the right node's MAC is printed. A MAC or address of no node is left as
// it is and fails the comparison.
func normalizeKubectl(s string, volatile map[string]string) string {
	s = ageRE.ReplaceAllString(s, "for <age>")
	s = kubeconfigRE.ReplaceAllString(s, "--kubeconfig=<lab>")
	for _, v := range slices.Sorted(maps.Keys(volatile)) {
		s = strings.ReplaceAll(s, v, volatile[v])
	}
	return s
}

// checkGolden runs the command until its normalised output (stdout, then
// stderr and the exit code when there are any) equals the golden file,
// for up to a minute: speakers write their reports every few seconds, so
// the lab converges to it. With -update it waits until the output holds
// still for three runs and writes it.
func checkGolden(t *testing.T, name string, norm func(string) string, run func() cliRun) {
	t.Helper()
	path := filepath.Join("testdata", "kubectl", name+".golden")
	render := func() string {
		r := run()
		s := norm(r.stdout)
		if r.stderr != "" || r.code != 0 {
			s += fmt.Sprintf("--- stderr, exit %d\n%s", r.code, norm(r.stderr))
		}
		return s
	}
	deadline := time.Now().Add(time.Minute)
	if *updateGolden || os.Getenv("OPENELB_UPDATE_GOLDEN") == "1" {
		got, same := render(), 1
		for same < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: output still changing after a minute; last:\n%s", name, got)
			}
			time.Sleep(2 * time.Second)
			next := render()
			if next == got {
				same++
			} else {
				got, same = next, 1
			}
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s:\n%s", path, got)
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	var got string
	for {
		if got = render(); got == string(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: output differs from %s after a minute (-want +got):\n%s\ngot:\n%s", name, path, cmp.Diff(string(want), got), got)
		}
		time.Sleep(time.Second)
	}
}

// nodeAddrs returns the MAC and the IPv6 link-local addresses of a seed
// node's rack segment interface.
func nodeAddrs(t *testing.T, ns string) (mac string, linkLocal []string) {
	t.Helper()
	err := netlab.InNS(ns, func() error {
		ifi, err := net.InterfaceByName(seedIface)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr.String()
		addrs, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsLinkLocalUnicast() {
				linkLocal = append(linkLocal, p.Addr().String())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("addresses of %s in %s: %v", seedIface, ns, err)
	}
	return mac, linkLocal
}
