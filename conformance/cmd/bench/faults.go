package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// faultRow is the recovery from one fault with a number of Services.
type faultRow struct {
	fault    string
	services int
	// down: the fault began → the failed component was back (the new
	// CCM process started; the API server or etcd answered its check).
	down time.Duration
	// lease, healthy: the new CCM process started → it held the Lease,
	// → its service-lb-controller check passed (CCM rows only).
	lease, healthy time.Duration
	// served: the component back → a Service created at that moment had
	// its address.
	served time.Duration
	// changed: Services whose address changed or went.
	changed int
	note    string
}

// faultBench times the recovery from faults at size: the alloc lab (the
// real CCM with its shipped defaults, one layer-2 pool, no nodes) holding
// sizes of Services.
type faultBench struct {
	cp      *harness.ControlPlane
	ccm     *harness.Component
	cs      kubernetes.Interface
	created int
	probes  int
	runs    int // CCM processes started
	rows    []faultRow
}

const faultNS = "faults"

// runFaults creates Services up to each of sizes in turn (cumulative) and
// at each size SIGKILLs and restarts the CCM, restarts kube-apiserver
// (SIGTERM) on its port and SIGKILLs and restarts etcd on its data dir,
// timing how long until a new Service is served again and counting the
// Services whose address changed (it asserts nothing; the fault suite of
// the conformance tests does, at 1,000).
func runFaults(ctx context.Context, sizes []int, creators int) error {
	cp, ccm, err := startAllocLab(ctx)
	if err != nil {
		return err
	}
	b := &faultBench{cp: cp, ccm: ccm, runs: 1}
	defer cp.Stop()
	defer func() { _ = b.ccm.Stop() }()
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	b.cs = kubernetes.NewForConfigOrDie(cfg)
	if err := cp.EnsureNamespace(ctx, faultNS, nil); err != nil {
		return err
	}
	if _, err := waitServiceCheck(ctx, b.ccm); err != nil {
		return err
	}
	for _, n := range sizes {
		if n <= b.created {
			continue
		}
		began := time.Now()
		if err := b.createUpTo(ctx, n, creators); err != nil {
			return err
		}
		fmt.Printf("faults: %d Services created and addressed in %v\n", n, time.Since(began).Round(time.Second))
		for _, fault := range []func(context.Context) (faultRow, error){b.killCCM, b.restartAPIServer, b.restartEtcd} {
			before, err := b.addresses(ctx)
			if err != nil {
				return err
			}
			row, err := fault(ctx)
			if err != nil {
				return err
			}
			after, err := b.addresses(ctx)
			if err != nil {
				return err
			}
			for name, a := range before {
				if after[name] != a {
					row.changed++
				}
			}
			row.services = n
			fmt.Printf("  %-40s down %v, served again after %v, %d addresses changed %s\n", row.fault, row.down.Round(time.Millisecond), row.served.Round(time.Millisecond), row.changed, row.note)
			b.rows = append(b.rows, row)
		}
	}
	b.print()
	return nil
}

// createUpTo creates Services b-<created> .. b-(n-1) with creators
// clients and waits until every Service has its address. A create that
// fails (a timeout on a loaded machine) is retried a few times; one that
// landed anyway is AlreadyExists.
func (b *faultBench) createUpTo(ctx context.Context, n, creators int) error {
	from := b.created
	err := inParallel(creators, n-from, func(i int) error {
		name := fmt.Sprintf("b-%d", from+i)
		var err error
		for range 5 {
			_, err = b.cs.CoreV1().Services(faultNS).Create(ctx, newService(faultNS, name), metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) || ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(time.Second)
		}
		return err
	})
	if err != nil {
		return err
	}
	b.created = n
	deadline := time.Now().Add(10 * time.Minute)
	for {
		got, err := b.addresses(ctx)
		if err == nil && len(got) >= n+b.probes {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d Services addressed after 10 minutes (%v)", len(got), n+b.probes, err)
		}
		time.Sleep(time.Second)
	}
}

// addresses maps each Service of the bench holding an address to it.
func (b *faultBench) addresses(ctx context.Context) (map[string]netip.Addr, error) {
	list, err := b.cs.CoreV1().Services(faultNS).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, err
	}
	out := map[string]netip.Addr{}
	for _, s := range list.Items {
		if len(s.Status.LoadBalancer.Ingress) > 0 {
			if a, err := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP); err == nil {
				out[s.Name] = a
			}
		}
	}
	return out, nil
}

// probe creates a new Service (retrying while the API server refuses)
// and returns when it had its address. A CCM that exits meanwhile (it
// loses its Lease when the API server is gone longer than its renew
// deadline) is started again, as its Deployment would, and noted.
func (b *faultBench) probe(ctx context.Context, note *string) (time.Time, error) {
	b.probes++
	name := fmt.Sprintf("probe-%d", b.probes)
	deadline := time.Now().Add(5 * time.Minute)
	created := false
	for {
		if b.ccm.Exited() {
			tail := b.ccm.LogTail(5)
			if err := b.startCCM(); err != nil {
				return time.Time{}, err
			}
			reason := "exited"
			if strings.Contains(tail, "leaderelection lost") {
				reason = "lost its Lease"
			}
			*note += fmt.Sprintf("(the CCM %s and was started again) ", reason)
		}
		if !created {
			_, err := b.cs.CoreV1().Services(faultNS).Create(ctx, newService(faultNS, name), metav1.CreateOptions{})
			created = err == nil || apierrors.IsAlreadyExists(err)
		} else if s, err := b.cs.CoreV1().Services(faultNS).Get(ctx, name, metav1.GetOptions{}); err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s got no address within 5 minutes", name)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// startCCM starts a new CCM process with the bench's flags, under a name
// (and log) of its own, so its log holds only its own lines.
func (b *faultBench) startCCM() error {
	b.runs++
	ccm, err := b.cp.StartCCM(fmt.Sprintf("ccm-%d", b.runs), strings.Fields(os.Getenv("BENCH_CCM_FLAGS"))...)
	if err != nil {
		return err
	}
	b.ccm = ccm
	return nil
}

// killCCM SIGKILLs the CCM and starts a new one at once (the killed
// leader never released its Lease: the new one waits for it to expire).
func (b *faultBench) killCCM(ctx context.Context) (faultRow, error) {
	r := faultRow{fault: "CCM SIGKILLed, started again"}
	killed := time.Now()
	if err := b.ccm.Kill(); err != nil {
		return r, err
	}
	if err := b.startCCM(); err != nil {
		return r, err
	}
	ccm := b.ccm
	started := time.Now()
	r.down = started.Sub(killed)
	served := make(chan error, 1)
	var servedAt time.Time
	go func() {
		var err error
		servedAt, err = b.probe(ctx, &r.note)
		served <- err
	}()
	for !ccm.LogContains("Successfully acquired lease") && !ccm.Exited() {
		time.Sleep(10 * time.Millisecond)
	}
	r.lease = time.Since(started)
	healthy, err := waitServiceCheck(ctx, ccm)
	if err != nil {
		return r, err
	}
	r.healthy = healthy.Sub(started)
	if err := <-served; err != nil {
		return r, err
	}
	r.served = servedAt.Sub(started)
	return r, nil
}

// restartAPIServer restarts kube-apiserver (SIGTERM, the harness's 5 s
// grace) on its port.
func (b *faultBench) restartAPIServer(ctx context.Context) (faultRow, error) {
	return b.timeRestart(ctx, "kube-apiserver restarted (SIGTERM)", func() (harness.RestartTimes, error) {
		return b.cp.RestartAPIServer(ctx, harness.Restart{})
	})
}

// restartEtcd SIGKILLs etcd and starts it again on its data dir.
func (b *faultBench) restartEtcd(ctx context.Context) (faultRow, error) {
	return b.timeRestart(ctx, "etcd SIGKILLed, started again", func() (harness.RestartTimes, error) {
		return b.cp.RestartEtcd(ctx, harness.Restart{Kill: true})
	})
}

// timeRestart runs restart and times how long the component was down and
// how long after it was ready a new Service was served.
func (b *faultBench) timeRestart(ctx context.Context, fault string, restart func() (harness.RestartTimes, error)) (faultRow, error) {
	r := faultRow{fault: fault}
	rt, err := restart()
	if err != nil {
		return r, err
	}
	r.down = rt.Ready.Sub(rt.Stopping)
	served, err := b.probe(ctx, &r.note)
	if err != nil {
		return r, err
	}
	r.served = served.Sub(rt.Ready)
	return r, nil
}

func (b *faultBench) print() {
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nfaults: recovery with many Services (real CCM, shipped defaults: Lease 15 s, renew deadline 10 s)")
	fmt.Fprintln(tw, "fault\tServices\tdown\tnew CCM → Lease\tnew CCM → check passes\tback → new Service addressed\taddresses changed\tnote")
	opt := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return d.Round(time.Millisecond).String()
	}
	for _, r := range b.rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", r.fault, r.services, opt(r.down), opt(r.lease), opt(r.healthy), opt(r.served), r.changed, r.note)
	}
	tw.Flush()
}
