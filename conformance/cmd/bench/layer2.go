package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
	"github.com/openelb/cloud-provider-openelb/nodeagent/agent"
)

// l2Rounds is how many failovers of each kind are timed.
const l2Rounds = 20

// l2ProbeEvery is the client's ARP request interval (arping in a loop).
const l2ProbeEvery = 50 * time.Millisecond

const l2Health = "127.0.0.1:10290"

// l2Bench times layer-2 failover from the client's side of a real segment:
// three node namespaces running the real speaker (shipped defaults, shipped
// RBAC), the real CCM, and a client asking for the Service IP every 50 ms
// while watching every ARP packet that claims it.
type l2Bench struct {
	cs       kubernetes.Interface
	net      *netlab.Lab
	seg      *netlab.L2
	kc       string
	speakers map[string]*netlab.Proc
	runs     map[string]int
	vip      netip.Addr
	watch    *netlab.ARPWatch
	table
}

func runLayer2(ctx context.Context) error {
	cp, err := startControlPlane(ctx, true, harness.Options{})
	if err != nil {
		return err
	}
	defer cp.Stop()
	kc, err := seedlab.SpeakerKubeconfig(ctx, cp)
	if err != nil {
		return err
	}
	ccm, err := cp.StartCCM("ccm")
	if err != nil {
		return err
	}
	defer ccm.Stop()
	n, err := netlab.New("l2b")
	if err != nil {
		return err
	}
	defer n.Close()
	u, err := url.Parse(cp.APIServerURL)
	if err != nil {
		return err
	}
	seg, err := netlab.BuildL2(ctx, n, netlab.L2Options{APIServer: u.Host})
	if err != nil {
		return fmt.Errorf("building the layer-2 segment: %w", err)
	}
	b := &l2Bench{cs: cp.Client(), net: n, seg: seg, kc: kc, speakers: map[string]*netlab.Proc{}, runs: map[string]int{}}
	if err := b.setup(ctx, cp); err != nil {
		return err
	}
	fmt.Printf("\nlayer2: Service %s answered on a 3-node segment; client probes every %v, %d rounds each\n", b.vip, l2ProbeEvery, l2Rounds)
	for _, planned := range []bool{false, true} {
		if err := b.failover(ctx, planned); err != nil {
			return err
		}
	}
	b.print()
	return nil
}

func (b *l2Bench) setup(ctx context.Context, cp *harness.ControlPlane) error {
	crd, err := client.New(cp.Config, client.Options{Scheme: apischeme.New()})
	if err != nil {
		return err
	}
	for _, node := range b.seg.Nodes {
		if _, err := b.cs.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: node.Name,
			Labels: map[string]string{v1alpha2.LabelSpeaker: v1alpha2.LabelSpeakerValue}}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		// Ready, as a kubelet would report it.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := b.cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
			n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: node.IP4.String()}}
			_, err = b.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return err
		}
		if err := b.startSpeaker(node.Name); err != nil {
			return err
		}
	}
	if err := crd.Create(ctx, &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: "l2pool"},
		Spec: v1alpha2.EipSpec{Address: "192.168.50.100-192.168.50.109", Protocol: v1alpha2.ProtocolLayer2, Interface: netlab.L2Interface}}); err != nil {
		return err
	}
	svc := newService("default", "web")
	svc.Annotations = map[string]string{v1alpha2.AnnotationEip: "l2pool"}
	if _, err := b.cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := b.cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		b.vip, err = netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the Service got no address: %w", err)
	}
	if b.watch, err = b.seg.WatchARP(b.vip, l2ProbeEvery); err != nil {
		return err
	}
	for _, n := range b.seg.Nodes {
		if err := b.waitCompeting(ctx, n.Name); err != nil {
			return err
		}
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = b.watch.WaitReply(c, time.Now())
	return err
}

func (b *l2Bench) startSpeaker(node string) error {
	bin, err := harness.ProjectBinary("openelb-speaker")
	if err != nil {
		return err
	}
	b.runs[node]++
	p, err := b.net.Start(b.seg.Node(node).NS, fmt.Sprintf("speaker-%s-%d", node, b.runs[node]), bin,
		append([]string{"--kubeconfig=" + b.kc, "--node-name=" + node, "--namespace=" + harness.CCMNamespace,
			"--health-address=" + l2Health}, speakerFlags()...)...)
	if err != nil {
		return err
	}
	b.speakers[node] = p
	return nil
}

// waitCompeting waits until the node's speaker competes for the pool
// (its is_leader metric exists).
func (b *l2Bench) waitCompeting(ctx context.Context, node string) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, ok, err := netlab.NodeMetric(ctx, b.seg.Node(node).NS, l2Health, `openelb_layer2_is_leader{pool="l2pool"}`)
		return err == nil && ok, nil
	})
	if err != nil {
		return fmt.Errorf("speaker of %s does not compete for the pool: %w", node, err)
	}
	return nil
}

// leader returns the node holding the pool's Lease.
func (b *l2Bench) leader(ctx context.Context) (*netlab.L2Node, error) {
	var n *netlab.L2Node
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := b.cs.CoordinationV1().Leases(harness.CCMNamespace).Get(ctx, agent.LeaseName("l2pool"), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		n = b.seg.Node(ptr.Deref(l.Spec.HolderIdentity, ""))
		return n != nil, nil
	})
	return n, err
}

// failover stops the answering node's speaker l2Rounds times (SIGKILL: a
// crash; SIGTERM: a rolling update) and times, at the client, signal →
// the first ARP packet claiming the IP for another MAC, and the gap
// between the last reply before it and the first reply after.
func (b *l2Bench) failover(ctx context.Context, planned bool) error {
	sig, what, target := syscall.SIGKILL, "unplanned (SIGKILL of the answering speaker)", "≤ 3 s"
	if planned {
		sig, what, target = syscall.SIGTERM, "planned (SIGTERM of the answering speaker)", "≤ 300 ms"
	}
	fmt.Printf("\nlayer2: %s\n", what)
	var claim, gap []time.Duration
	split := 0
	for i := range l2Rounds {
		old, err := b.leader(ctx)
		if err != nil {
			return err
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		last, err := b.watch.WaitReply(c, time.Now())
		cancel()
		if err != nil {
			return err
		}
		if last.MAC.String() != old.MAC.String() {
			return fmt.Errorf("round %d: %s answers, the Lease is held by %s", i, last.MAC, old.Name)
		}
		t0 := time.Now()
		if err := b.speakers[old.Name].Signal(sig); err != nil {
			return err
		}
		c, cancel = context.WithTimeout(ctx, 15*time.Second)
		next, err := b.watch.WaitOther(c, t0, old.MAC)
		var reply netlab.ARPSeen
		if err == nil {
			reply, err = b.watch.WaitReply(c, next.At)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		lastOld := last.At
		for _, s := range b.watch.Seen(last.At) {
			if s.Kind == netlab.ARPReply && s.MAC.String() == old.MAC.String() && s.At.After(lastOld) {
				lastOld = s.At
			}
		}
		claim = append(claim, next.At.Sub(t0))
		gap = append(gap, reply.At.Sub(lastOld))
		split += len(b.watch.SplitRounds(t0.Add(-time.Second), time.Now()))
		fmt.Printf("  round %2d: %s → %s  claimed after %s, client without an answer %s\n", i+1, old.Name,
			b.seg.NodeByMAC(next.MAC).Name, ms(next.At.Sub(t0)), ms(reply.At.Sub(lastOld)))
		if err := b.speakers[old.Name].Wait(15 * time.Second); err != nil {
			return err
		}
		if err := b.startSpeaker(old.Name); err != nil {
			return err
		}
		if err := b.waitCompeting(ctx, old.Name); err != nil {
			return err
		}
	}
	kind := "unplanned"
	if planned {
		kind = "planned"
	}
	r, g := summarize("", claim), summarize("", gap)
	b.add(fmt.Sprintf("%s failover: signal → new MAC claims the IP, p50 / p99", kind), ms(r.p50)+" / "+ms(r.p99), target)
	b.add(fmt.Sprintf("%s failover: client without an answer, p50 / p99", kind), ms(g.p50)+" / "+ms(g.p99), target)
	b.add(fmt.Sprintf("%s failover: requests answered by two MACs", kind), fmt.Sprint(split), "0")
	return nil
}

func (b *l2Bench) print() {
	b.printTable(fmt.Sprintf("Layer 2 failover (3 speakers on one segment, shipped defaults: Lease %s; client ARP every %v; %d rounds)",
		strings.Join([]string{agent.DefaultLeaseTimings.Duration.String(), agent.DefaultLeaseTimings.RenewDeadline.String(), agent.DefaultLeaseTimings.RetryPeriod.String()}, " / "),
		l2ProbeEvery, l2Rounds))
}
