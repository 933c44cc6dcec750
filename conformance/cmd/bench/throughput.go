package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// The throughput suite answers "how much slower are Service creates with
// the CCM running?". Each round starts a fresh control plane (etcd,
// kube-apiserver, kube-controller-manager, the bench's Eip) so no round
// inherits another's etcd size or caches, and the two modes alternate
// (none, openelb, none, openelb) so a drift of the machine over the run
// (thermal, page cache, a neighbour) hits both alike:
//   - none: no load-balancer controller at all (the CCM is not started;
//     kube-controller-manager has no cloud provider): the API server's own
//     rate for these creates;
//   - status-only: the same plus the least any load-balancer controller
//     does: a controller inside the bench that writes each new Service's
//     status (one PATCH, an address from a counter) and nothing else. It
//     is the floor: what the API server's rate becomes once every Service
//     costs one write more, which no implementation can avoid;
//   - openelb: the same plus the CCM with its shipped defaults. It must
//     first report ready (the service-lb-controller health check), then
//     one Service is created at once and timed create→IP ("first Service
//     after ready": what a user who waits for readiness sees).
//
// The probe is the same in both: one single Service (in openelb mode the
// timed one), a rest of throughputRest, then -creators clients create
// -throughput-services Services as fast as the API server accepts them.
// Throughput is Services / (first create start → last create returned).
// The bench's Service watcher runs in both modes so the API server serves
// the same watch. The CPU each process used during the creates is printed
// beside the rates: on a small machine it says where the rate went.

const (
	// throughputNamespace holds every Service of a round.
	throughputNamespace = "throughput"
	// throughputRest separates the single Service from the burst in both
	// modes: the fresh control plane's start-up work (kube-controller-
	// manager's informers and controllers) and, in openelb mode, the
	// CCM's deferred work for the single Service (claim bind, event,
	// plan) calm down, so the burst measures steady creates.
	throughputRest = 2 * time.Second
	// readyPoll is how often the CCM's health check is polled: finer than
	// the first Service's target (50 ms), so the poll adds at most 5 ms
	// to "ready" and nothing to the first Service's time.
	readyPoll = 5 * time.Millisecond
	// readyTimeout bounds the wait for the check to pass.
	readyTimeout = 2 * time.Minute
	// serviceCheckPassed is the line /healthz?verbose carries once the
	// leader's service-lb-controller check passes. k8s.io/cloud-provider
	// routes only /healthz itself on the secure port (not
	// /healthz/<check>), so the check is read from the verbose listing.
	serviceCheckPassed = "[+]service-lb-controller ok"
)

// Targets printed beside the figures.
const (
	targetRatio = 0.85
	targetP99   = time.Second
	targetFirst = 50 * time.Millisecond
)

// throughputRound is one round's measurements; result holds the burst's
// name, size, create span and writes, and in openelb mode its create→IP
// latencies and last-IP lag.
type throughputRound struct {
	result
	round   int
	mode    string
	perSec  float64       // Services created per second
	toReady time.Duration // openelb: CCM started → check passed
	first   time.Duration // openelb: first Service after ready, create → IP
}

func (r throughputRound) withCCM() bool { return r.mode == "openelb" }

// assigns tells whether the round's Services get addresses.
func (r throughputRound) assigns() bool { return r.mode != "none" }

// runThroughput runs the suite and prints its table.
func runThroughput(ctx context.Context, n, creators int) error {
	var rounds []throughputRound
	modes := []string{"none", "status-only", "openelb"}
	for i := range 2 * len(modes) {
		mode, round := modes[i%len(modes)], i/len(modes)+1
		fmt.Fprintf(os.Stderr, "throughput: round %d, %s: %d Services, %d creators\n", round, mode, n, creators)
		r, err := throughputOnce(ctx, round, mode, n, creators)
		if err != nil {
			return fmt.Errorf("throughput round %d (%s): %w", round, mode, err)
		}
		rounds = append(rounds, r)
	}
	printThroughput(rounds, n, creators)
	return nil
}

// throughputOnce measures one round on its own control plane.
func throughputOnce(ctx context.Context, round int, mode string, n, creators int) (throughputRound, error) {
	r := throughputRound{round: round, mode: mode}
	cp, err := startControlPlane(ctx, false, harness.Options{})
	if err != nil {
		return r, err
	}
	defer cp.Stop()
	// The pool exists in both modes, so etcd holds the same objects.
	if err := createBenchPool(ctx, cp); err != nil {
		return r, err
	}
	if err := cp.EnsureNamespace(ctx, throughputNamespace, nil); err != nil {
		return r, err
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	cs := kubernetes.NewForConfigOrDie(cfg)
	w := newWatcher(cs)
	defer w.stop()

	var ccm *harness.Component
	if r.withCCM() {
		if ccm, err = startBenchCCM(cp); err != nil {
			return r, err
		}
		defer ccm.Stop()
		if keep := os.Getenv("BENCH_KEEP_LOG"); keep != "" {
			defer func() { _ = exec.Command("cp", ccm.LogPath(), fmt.Sprintf("%s.round%d", keep, round)).Run() }()
		}
		started := time.Now()
		readyAt, err := waitServiceCheck(ctx, ccm)
		if err != nil {
			return r, err
		}
		r.toReady = readyAt.Sub(started)
		if r.first, err = createAndWait(ctx, cs, w, throughputNamespace, "first"); err != nil {
			return r, fmt.Errorf("first Service after ready: %w", err)
		}
		// Wall-clock marks to line up with the CCM's log (BENCH_KEEP_LOG,
		// BENCH_CCM_FLAGS=--v=4) when the first Service is slow.
		fmt.Fprintf(os.Stderr, "throughput: round %d: CCM started %s, check passed %s, first Service create→IP %s\n",
			round, started.Format("15:04:05.000000"), readyAt.Format("15:04:05.000000"), ms(r.first))
	} else {
		if r.mode == "status-only" {
			stop := startStatusOnly(cs, throughputNamespace)
			defer stop()
		}
		// The same single create, untimed: every mode's burst starts on an
		// API server that has created one Service.
		if _, err := cs.CoreV1().Services(throughputNamespace).Create(ctx, newService(throughputNamespace, "first"), metav1.CreateOptions{}); err != nil {
			return r, fmt.Errorf("first Service: %w", err)
		}
	}
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(throughputRest):
	}

	before, err := writes(ctx, cs)
	if err != nil {
		return r, err
	}
	pids := cp.PIDs() // the control plane's own processes, not the CCM
	if ccm != nil {
		pids["ccm"] = ccm.Pid()
	}
	cpu0 := sample(pids)
	if r.assigns() {
		// burst returns once the last IP is seen: after the creates by
		// the last-IP lag (milliseconds), so the CPU figures cover the
		// same span in both modes, give or take that lag.
		r.result, err = burst(ctx, cs, w, throughputNamespace, n, creators)
	} else {
		var begin, last time.Time
		_, begin, last, err = createAll(ctx, cs, throughputNamespace, n, creators)
		r.result = result{n: n, createSpan: last.Sub(begin)}
	}
	if err != nil {
		return r, err
	}
	cpu1 := sample(pids)
	r.cpu = usage{}
	for p := range cpu1 {
		r.cpu[p] = cpu1[p] - cpu0[p]
	}
	r.name = fmt.Sprintf("round %d, %s", round, mode)
	r.perSec = float64(n) / r.createSpan.Seconds()
	time.Sleep(settle) // let asynchronous writes (plans, claim binds, events) land
	after, err := writes(ctx, cs)
	if err != nil {
		return r, err
	}
	r.writes = perService(before, after, n)
	return r, nil
}

// waitServiceCheck polls the CCM's /healthz?verbose every readyPoll until
// it answers 200 listing the service-lb-controller check as passed, and
// returns when it first did. Before the CCM leads and has started its
// controllers, /healthz passes without that check, so 200 alone is not
// enough.
func waitServiceCheck(ctx context.Context, ccm *harness.Component) (time.Time, error) {
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz?verbose=1", ccm.SecurePort)
	deadline := time.Now().Add(readyTimeout)
	last := "no answer"
	for {
		code, body, err := getText(ctx, url)
		switch {
		case err != nil:
			last = err.Error()
		case code == http.StatusOK && strings.Contains(body, serviceCheckPassed):
			return time.Now(), nil
		default:
			last = fmt.Sprintf("%d %q", code, body)
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the CCM's service-lb-controller check did not pass within %s; last answer: %s", readyTimeout, last)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(readyPoll):
		}
	}
}

// getText GETs url with the bench's CCM client (self-signed certificate).
func getText(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := ccmHTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func printThroughput(rounds []throughputRound, n, creators int) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nthroughput: %d Services by %d creators per round, each round on a fresh control plane "+
		"(kube-apiserver 1.37.2 + etcd 3.6 on tmpfs, kube-controller-manager); none: no load-balancer controller; status-only: a controller writing each Service's status and nothing else; openelb: the CCM, shipped defaults\n", n, creators)
	fmt.Fprintln(tw, "round\tmode\tcreates took\tServices/s\tCCM start→ready\tfirst Service after ready (≤ 50 ms)\tcreate→IP p50\tp99 (≤ 1 s)\tlast create→last IP\twrites/Service\tCPU s during creates: apiserver/etcd/kcm/ccm")
	var none, elb, floor []float64
	var worstP99 time.Duration
	var firsts []string
	firstOK := true
	for _, r := range rounds {
		ready, first, p50, p99, lag := "-", "-", "-", "-", "-"
		if r.withCCM() {
			ready, first, p50, p99, lag = ms(r.toReady), ms(r.first), ms(r.p50), ms(r.p99), ms(r.lastLag)
			elb = append(elb, r.perSec)
			worstP99 = max(worstP99, r.p99)
			firsts = append(firsts, ms(r.first))
			firstOK = firstOK && r.first <= targetFirst
		} else if r.assigns() {
			p50, p99, lag = ms(r.p50), ms(r.p99), ms(r.lastLag)
			floor = append(floor, r.perSec)
		} else {
			none = append(none, r.perSec)
		}
		cpu := make([]string, 0, 4)
		for _, p := range []string{harness.APIServer, harness.Etcd, harness.ControllerManager, "ccm"} {
			if v, ok := r.cpu[p]; ok {
				cpu = append(cpu, fmt.Sprintf("%.1f", v))
			} else {
				cpu = append(cpu, "-")
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%.2f s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n", r.round, r.mode, r.createSpan.Seconds(), r.perSec,
			ready, first, p50, p99, lag, harness.TotalWrites(r.writes), strings.Join(cpu, " / "))
	}
	tw.Flush()

	results := make([]result, len(rounds))
	for i, r := range rounds {
		results[i] = r.result
	}
	printWrites(results)

	ratio := mean(elb) / mean(none)
	verdict := func(ok bool) string {
		if ok {
			return ""
		}
		return " (missed)"
	}
	var t table
	fmt.Println()
	t.add("throughput ratio, mean(openelb) / mean(none)",
		fmt.Sprintf("%.1f %% (%.1f / %.1f Services/s)%s", 100*ratio, mean(elb), mean(none), verdict(ratio >= targetRatio)), "≥ 85 %")
	t.add("  the floor: status-only (one status write per Service, nothing else) / none",
		fmt.Sprintf("%.1f %% (%.1f Services/s)", 100*mean(floor)/mean(none), mean(floor)), "")
	t.add("create→IP p99, worst round", ms(worstP99)+verdict(worstP99 <= targetP99), "≤ 1 s")
	t.add("first Service after ready, create→IP (each openelb round)", strings.Join(firsts, " / ")+verdict(firstOK), "≤ 50 ms")
	t.printTable("throughput summary")
}

// startStatusOnly runs the status-only controller of the throughput suite
// on ns until the returned stop: 4 workers give each new LoadBalancer
// Service without an address one from 10.200.0.0/16 (a counter), in one
// status PATCH, as a minimal controller would.
func startStatusOnly(cs kubernetes.Interface, ns string) (stop func()) {
	queue := make(chan string, 100000)
	done := make(chan struct{})
	see := func(o any) {
		if svc, ok := o.(*v1.Service); ok && svc.Spec.Type == v1.ServiceTypeLoadBalancer && len(svc.Status.LoadBalancer.Ingress) == 0 {
			queue <- svc.Name
		}
	}
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "services", ns, fields.Everything()),
		ObjectType:    &v1.Service{},
		Handler:       cache.ResourceEventHandlerFuncs{AddFunc: see},
	})
	go ctrl.Run(done)
	var next atomic.Uint32
	for range 4 {
		go func() {
			for {
				select {
				case <-done:
					return
				case name := <-queue:
					n := next.Add(1)
					patch := fmt.Sprintf(`{"status":{"loadBalancer":{"ingress":[{"ip":"10.200.%d.%d"}]}}}`, n>>8&0xff, n&0xff)
					_, _ = cs.CoreV1().Services(ns).Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
				}
			}
		}()
	}
	return func() { close(done) }
}
