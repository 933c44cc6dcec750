package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// spreadConnections is what a spread is measured over: 400 per node of
// seed 000 for an equal share.
const spreadConnections = 1200

// spreadPort is where the nodes answer for the measured address.
const spreadPort = 8080

// serveFirst makes the nodes answer on the first Service's address and
// returns it.
func (b *routeBench) serveFirst(ctx context.Context) (string, error) {
	svc, err := b.cs.CoreV1().Services("routes").Get(ctx, "r-0", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if len(svc.Status.LoadBalancer.Ingress) == 0 {
		return "", fmt.Errorf("routes/r-0 has no address")
	}
	vip := svc.Status.LoadBalancer.Ingress[0].IP
	if b.served != vip {
		if err := b.lab.ServeNodes(vip, spreadPort); err != nil {
			return "", err
		}
		b.served = vip
	}
	return vip, nil
}

// spread counts n client connections to vip per answering node.
func (b *routeBench) spread(vip string, n int) (map[string]int, error) {
	seen := map[string]int{}
	for range n {
		node, err := b.lab.Request(fmt.Sprintf("%s:%d", vip, spreadPort))
		if err != nil {
			return nil, err
		}
		seen[node]++
	}
	return seen, nil
}

func (b *routeBench) spreadText(seen map[string]int) (string, float64) {
	share := float64(spreadConnections) / float64(len(b.lab.Topo.Nodes))
	var parts []string
	worst := 0.0
	for _, n := range b.lab.Topo.Nodes {
		parts = append(parts, fmt.Sprintf("%s %d", n.Name, seen[n.Name]))
		worst = max(worst, abs(float64(seen[n.Name])-share)/share)
	}
	return strings.Join(parts, ", "), worst
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// weightedSpread measures how 1,200 connections to one address spread over
// the three nodes with plain ECMP, then with linkBandwidthMbps on the pool
// (weighted ECMP at the spine), and turns it off again.
func (b *routeBench) weightedSpread(ctx context.Context) error {
	fmt.Printf("\nroutes: spread of %d connections over the nodes, plain and weighted ECMP\n", spreadConnections)
	vip, err := b.serveFirst(ctx)
	if err != nil {
		return err
	}
	plain, err := b.spread(vip, spreadConnections)
	if err != nil {
		return err
	}
	text, worst := b.spreadText(plain)
	b.add("plain ECMP: connections per node ("+text+")", fmt.Sprintf("worst %.0f %% off", worst*100), "")
	if err := b.patchPool(ctx, `{"spec":{"bgp":{"linkBandwidthMbps":1000}}}`); err != nil {
		return err
	}
	t0 := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		h, err := b.lab.Net.KernelWeights(ctx, b.lab.Topo.Spine.NS, vip+"/32")
		if err != nil || len(h) != 2 {
			return false, nil
		}
		lo, hi := min(h[0].Weight, h[1].Weight), max(h[0].Weight, h[1].Weight)
		return lo > 0 && float64(hi)/float64(lo) > 1.8, nil
	})
	if err != nil {
		return fmt.Errorf("the spine's route to %s never became weighted: %w", vip, err)
	}
	b.add(fmt.Sprintf("linkBandwidthMbps set on the pool of %d Services → spine weighted", b.created), ms(time.Since(t0)), "")
	weighted, err := b.spread(vip, spreadConnections)
	if err != nil {
		return err
	}
	text, worst = b.spreadText(weighted)
	b.add("weighted ECMP: connections per node ("+text+")", fmt.Sprintf("worst %.0f %% off", worst*100), "≤ 20 %")
	if err := b.patchPool(ctx, `{"spec":{"bgp":{"linkBandwidthMbps":null}}}`); err != nil {
		return err
	}
	// Settled before the next step measures connections.
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		h, err := b.lab.Net.KernelWeights(ctx, b.lab.Topo.Spine.NS, vip+"/32")
		return err == nil && len(h) == 2 && h[0].Weight == h[1].Weight, nil
	})
}

func (b *routeBench) patchPool(ctx context.Context, patch string) error {
	return b.lab.CRD.Patch(ctx, &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: "eip-sample-pool"}}, client.RawPatch(types.MergePatchType, []byte(patch)))
}

// drainGap cordons master1 with BgpConf gracefulShutdown on while a client
// opens a connection to the address every 5 ms, and reports the failed
// connections and the longest time between two that succeeded.
func (b *routeBench) drainGap(ctx context.Context) error {
	const delay = 5
	fmt.Printf("\nroutes: drain of master1 with graceful-shutdown (delay %d s), a client connecting every 5 ms\n", delay)
	vip, err := b.serveFirst(ctx)
	if err != nil {
		return err
	}
	gs := fmt.Sprintf(`{"spec":{"gracefulShutdown":{"enabled":true,"delaySeconds":%d}}}`, delay)
	if err := b.lab.CRD.Patch(ctx, &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, []byte(gs))); err != nil {
		return err
	}
	var (
		mu                sync.Mutex
		ok, failed        int
		last              = time.Now()
		longest           time.Duration
		stop              = make(chan struct{})
		done              = make(chan struct{})
		master1, notOnOne int
		failures          []string
		t0                = time.Now()
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			node, err := b.lab.Request(fmt.Sprintf("%s:%d", vip, spreadPort))
			now := time.Now()
			mu.Lock()
			if err != nil {
				failed++
				if len(failures) < 10 {
					failures = append(failures, fmt.Sprintf("%v: %v", now.Sub(t0).Round(time.Millisecond), err))
				}
			} else {
				ok++
				longest = max(longest, now.Sub(last))
				last = now
				if node == "master1" {
					master1++
				} else {
					notOnOne++
				}
			}
			mu.Unlock()
		}
	}()
	time.Sleep(time.Second)
	fmt.Printf("  cordon at %v\n", time.Since(t0).Round(time.Millisecond))
	if err := b.setUnschedulable(ctx, "master1", true); err != nil {
		return err
	}
	time.Sleep((delay + 3) * time.Second)
	fmt.Printf("  uncordon at %v\n", time.Since(t0).Round(time.Millisecond))
	mu.Lock()
	afterDrain := master1
	mu.Unlock()
	if err := b.setUnschedulable(ctx, "master1", false); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, f := range failures {
		fmt.Println("  failed:", f)
	}
	b.add(fmt.Sprintf("drain and return of master1: connections failed (of %d)", ok+failed), fmt.Sprint(failed), "0")
	b.add("drain and return of master1: longest gap between two connections", ms(longest), "")
	if afterDrain == master1 {
		return fmt.Errorf("no connection reached master1 after the uncordon (%d before)", afterDrain)
	}
	return nil
}

func (b *routeBench) setUnschedulable(ctx context.Context, node string, on bool) error {
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, on)
	_, err := b.cs.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}
