// Command demo (make demo) runs OpenELB's multi-router guide (seed 000) on
// this machine: a real kube-apiserver, etcd and kube-controller-manager, the
// openelb CCM, FRR spine and leaf routers in network namespaces, the real
// openelb-speaker in the master1 and worker-p002 node namespaces. It runs
// the guide's commands, creates a LoadBalancer Service, prints its address,
// the routes the leaves and the spine learned, and which node answered each
// of several requests from a client behind the spine; then it tears
// everything down (or keeps it with -wait). With -cluster (make
// demo-cluster) the nodes are real (see runCluster).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

func main() {
	keep := flag.Bool("wait", false, "keep the lab running until Ctrl-C")
	cluster := flag.Bool("cluster", false, "run the guide on real nodes (kubelet, containerd, kube-proxy) with the provider as the pods of deploy/ (make demo-cluster)")
	requests := flag.Int("requests", 12, "requests sent from the client")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root (it creates network namespaces and starts FRR)")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if *cluster {
		run = runCluster
	}
	if err := run(ctx, *keep, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func run(ctx context.Context, keep bool, requests int) error {
	step("starting etcd, kube-apiserver and kube-controller-manager (--cloud-provider=external)")
	// No kubelets: the node lifecycle controller would mark the lab's
	// nodes NotReady, so it is off; the demo writes node status itself.
	cp, err := harness.Start(ctx, harness.Options{ControllerManager: true,
		ExtraControllerManagerFlags: []string{"--controllers=*,-node-lifecycle-controller"}})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping everything")
		_ = cp.Stop()
	}()
	fmt.Printf("control plane up in %s; export KUBECONFIG=%s\n", cp.StartupDuration.Round(time.Millisecond), cp.Kubeconfig)

	step("installing the CRDs and starting openelb-cloud-controller-manager --cloud-provider=openelb")
	if err := cp.ApplyCRDs(ctx); err != nil {
		return err
	}
	if err := cp.EnsureNamespace(ctx, harness.CCMNamespace, nil); err != nil {
		return err
	}
	ccm, err := cp.StartCCM("openelb-cloud-controller-manager")
	if err != nil {
		return err
	}
	defer ccm.Stop()

	step("building the guide's network: FRR spine, leaf1, leaf2; nodes master1, worker-p001 (leaf1), worker-p002 (leaf2); a client behind the spine")
	lab, err := seedlab.New(ctx, cp, seedlab.Options{})
	if err != nil {
		return err
	}
	defer lab.Close()
	for _, n := range lab.Topo.Nodes {
		fmt.Printf("  %-12s %-12s under %s\n", n.Name, n.IP, n.Leaf)
	}
	if err := lab.RegisterNodes(ctx); err != nil {
		return err
	}
	kubectl := printingKubectl(ctx, cp)
	if err := guideCommands(ctx, lab); err != nil {
		return err
	}

	if err := configure(ctx, lab, kubectl); err != nil {
		return err
	}

	step("starting openelb-speaker in master1 and worker-p002 (the nodes labelled lb.kubesphere.io/v1alpha1=openelb)")
	for _, n := range []string{"master1", "worker-p002"} {
		if _, err := lab.StartSpeaker(n); err != nil {
			return err
		}
	}

	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	step("creating a LoadBalancer Service")
	if err := kubectl("apply", "-f", filepath.Join(root, "deploy", "samples", "service.yaml")); err != nil {
		return err
	}
	var ip string
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := cp.Client().CoreV1().Services("default").Get(ctx, "nginx", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		ip = s.Status.LoadBalancer.Ingress[0].IP
		return true, nil
	})
	if err != nil {
		fmt.Print(ccm.LogTail(30))
		return fmt.Errorf("the Service got no address: %w", err)
	}
	fmt.Printf("Service default/nginx has address %s\n", ip)

	step("waiting for the routes: leaf1 via master1+worker-p001, leaf2 via worker-p002, spine via both leaves")
	if err := printRoutes(ctx, lab, ip); err != nil {
		return err
	}

	step("%d requests from the client (%s) to %s:8080; each node answers with its name", requests, netlab.ClientIP, ip)
	if err := lab.ServeNodes(ip, 8080); err != nil {
		return err
	}
	if err := sendRequests(lab, ip, requests); err != nil {
		return err
	}

	step("weighted ECMP: linkBandwidthMbps 1000 on the pool; each path carries its node's 1 Gbit/s, leaf1 sums its two nodes, the spine splits 2:1")
	if err := kubectl("patch", "eip", "eip-sample-pool", "--type=merge", "-p", `{"spec":{"bgp":{"linkBandwidthMbps":1000}}}`); err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		h, err := lab.Net.KernelWeights(ctx, lab.Topo.Spine.NS, ip+"/32")
		return err == nil && len(h) == 2 && h[0].Weight != h[1].Weight, nil
	})
	if err != nil {
		return fmt.Errorf("the spine's route never became weighted: %w", err)
	}
	fib, err := lab.Net.Exec(ctx, lab.Topo.Spine.NS, "ip", "route", "show", ip+"/32")
	if err != nil {
		return err
	}
	fmt.Printf("--- spine: kernel route ---\n%s", fib)
	if err := sendRequests(lab, ip, requests); err != nil {
		return err
	}

	step("what the cluster says: the plan, the racks (who announces to which router with which next hops), the speakers' and the peers' status")
	// Status is printed once it reflects the sessions the routers show:
	// every speaker reports its sessions established and its paths sent.
	if err := waitSpeakersReport(ctx, lab, map[string]int32{"master1": 2, "worker-p002": 1}); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"get", "service", "nginx", "-o", "wide"},
		{"get", "lbplan", "nginx", "-o", "wide"},
		{"get", "lbrack"},
		{"get", "lbspeaker"},
		{"get", "bgppeer", "-o", "custom-columns=PEER:.metadata.name,NODE-STATUS:.status.nodesPeerStatus"},
	} {
		if err := kubectl(args...); err != nil {
			return err
		}
	}
	if keep {
		step("lab running; KUBECONFIG=%s; namespaces %s*; Ctrl-C to stop", cp.Kubeconfig, lab.Topo.Client[:strings.LastIndex(lab.Topo.Client, "-")+1])
		<-ctx.Done()
	}
	return nil
}

// waitSpeakersReport waits until each node's LoadBalancerSpeaker and its
// entries in the BgpPeers' status say every session is established, with
// the given number of paths sent in all.
func waitSpeakersReport(ctx context.Context, lab *seedlab.Lab, paths map[string]int32) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var peers v1alpha2.BgpPeerList
		if err := lab.CRD.List(ctx, &peers); err != nil {
			return false, nil
		}
		for node, want := range paths {
			var sp v1alpha2.LoadBalancerSpeaker
			if err := lab.CRD.Get(ctx, client.ObjectKey{Name: node}, &sp); err != nil {
				last = fmt.Sprintf("%s: %v", node, err)
				return false, nil
			}
			st := sp.Status
			if !st.Announcing || st.Paths != want || len(st.Sessions) == 0 || st.SessionsEstablished != int32(len(st.Sessions)) {
				last = fmt.Sprintf("%s: %+v", node, st)
				return false, nil
			}
			for _, s := range st.Sessions {
				for _, bp := range peers.Items {
					if ps, ok := bp.Status.NodesPeerStatus[node]; bp.Name == s.Peer && (!ok || ps.PeerState.SessionState != "established") {
						last = fmt.Sprintf("BgpPeer %s: node %s %+v", bp.Name, node, ps.PeerState)
						return false, nil
					}
				}
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("speaker status did not converge (%s): %w", last, err)
	}
	return nil
}

// printRoutes waits until leaf1 routes ip over its two nodes, leaf2 over
// its one and the spine over both leaves, then prints each router's BGP
// table entry and kernel route.
// sendRequests opens n connections from the client to ip:8080 and prints
// which node answered each.
func sendRequests(lab *seedlab.Lab, ip string, n int) error {
	count := map[string]int{}
	for i := range n {
		node, err := lab.Request(ip + ":8080")
		if err != nil {
			return err
		}
		count[node]++
		fmt.Printf("  request %2d -> %s\n", i+1, node)
	}
	fmt.Printf("answers per node: %v\n", count)
	return nil
}

func printRoutes(ctx context.Context, lab *seedlab.Lab, ip string) error {
	prefix := ip + "/32"
	want := map[*netlab.FRR]int{lab.Topo.Leaf1: 2, lab.Topo.Leaf2: 1, lab.Topo.Spine: 2}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for r, n := range want {
			hops, err := lab.Net.KernelNextHops(ctx, r.NS, prefix)
			if err != nil || len(hops) != n {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("routes did not converge: %w", err)
	}
	for _, r := range []*netlab.FRR{lab.Topo.Leaf1, lab.Topo.Leaf2, lab.Topo.Spine} {
		out, err := r.Vtysh(ctx, "show bgp ipv4 unicast "+prefix)
		if err != nil {
			return err
		}
		fib, err := lab.Net.Exec(ctx, r.NS, "ip", "route", "show", prefix)
		if err != nil {
			return err
		}
		fmt.Printf("\n--- %s: BGP table ---\n%s--- %s: kernel route ---\n%s", r.Name, out, r.Name, fib)
	}
	return nil
}

// printingKubectl runs kubectl against cp, printing the command and its
// output.
func printingKubectl(ctx context.Context, cp *harness.ControlPlane) func(args ...string) error {
	return func(args ...string) error {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		out, err := cp.Kubectl(ctx, args...)
		fmt.Print(out)
		return err
	}
}

// guideCommands runs the guide's labelling commands, printed, and labels
// worker-p001's rack too: the guide labels only the speakers' racks, and a
// node without a rack label is in no rack, so its address is never
// announced (the plan says so).
func guideCommands(ctx context.Context, lab *seedlab.Lab) error {
	step("the guide's commands, verbatim")
	for _, line := range seedlab.GuideCommands {
		fmt.Println("$ " + line)
		if err := lab.Kubectl(ctx, line); err != nil {
			return err
		}
	}
	line := "kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1"
	fmt.Println("$ " + line + "   # not in the guide: every node of a rack needs the label")
	return lab.Kubectl(ctx, line)
}

// configure creates the guide's BgpConf, BgpPeers and pool, and shows them.
func configure(ctx context.Context, lab *seedlab.Lab, kubectl func(args ...string) error) error {
	step("BgpConf (AS per rack), one BgpPeer per leaf selected by nodeSelector, the address pool")
	if err := lab.Configure(ctx, "172.22.0.2-172.22.0.254"); err != nil {
		return err
	}
	return kubectl("get", "bgpconf,bgppeer,eip")
}
