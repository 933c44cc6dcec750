// Command bench (make bench) measures, and prints as tables (it asserts
// nothing):
//   - alloc: create→IP latency of the real CCM against the real local
//     control plane: 100 Services created one at a time, then bursts of
//     1,000 and 10,000 created by 16 concurrent clients, and the API writes
//     each Service costs;
//   - routes: the BGP data path on the seed-000 lab (FRR leaves and spine,
//     real speakers): create→route in the routers' kernels, SIGTERM
//     withdraw, BFD detection of a dead node, convergence of 1,000 and
//     10,000 routes, the speaker's memory and API requests at rest, and 60 s
//     without the API server;
//   - throughput: how much the CCM slows Service creation down: 16
//     creators create 1,000 Services on a fresh control plane without any
//     load-balancer controller and with the CCM, two rounds each
//     alternating, plus the first Service's create→IP right after the CCM
//     reports ready (throughput.go);
//   - scale (not run by default: it takes many minutes): what routine
//     events cost at size, 1,000 nodes in 20 racks and 10,000 Services with
//     one rack real (FRR leaf, two speakers): node flip → FIB, API writes
//     per flip, speaker start → routes, memory and requests at rest, and the
//     writes 40 starting speakers cause; -bin-dir measures another build;
//   - faults (not run by default: creating 10,000 Services takes minutes):
//     recovery with 1,000 and 10,000 Services from the CCM SIGKILLed,
//     kube-apiserver restarted and etcd restarted (faults.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

func main() {
	single := flag.Int("single", 100, "Services created one at a time")
	bursts := flag.String("bursts", "1000,10000", "burst sizes, comma-separated")
	creators := flag.Int("creators", 16, "concurrent creators in a burst")
	suites := flag.String("suites", "alloc,steady,routes,layer2,throughput", "what to measure: alloc (create→IP), routes (BGP data path on the seed-000 lab), layer2 (failover with 1 and 1,000 addresses, spread over the nodes and Lease writes on a 3-node segment), steady (the CCM's memory and API requests at rest with the -bursts sizes of Services), throughput (Service creates/s by -creators clients without a load-balancer controller and with the CCM, alternating, two rounds each on fresh control planes, and the first Service's create→IP once the CCM is ready), scale (what node flips, speaker starts and rest cost with -scale-* nodes, racks and Services; not in the default list: it takes many minutes), faults (recovery from the CCM, kube-apiserver and etcd restarted with -fault-sizes Services; not in the default list either)")
	throughputServices := flag.Int("throughput-services", 1000, "throughput: Services created per round")
	routeSizes := flag.String("route-sizes", "1000,10000", "Service counts for route convergence")
	faultSizes := flag.String("fault-sizes", "1000,10000", "faults: Service counts (cumulative) at which the faults are timed")
	rounds := flag.Int("rounds", 10, "rounds of the SIGTERM and BFD measurements (routes) and of the node flips (scale)")
	var so scaleOptions
	flag.IntVar(&so.nodes, "scale-nodes", 1000, "scale: simulated Node objects")
	flag.IntVar(&so.racks, "scale-racks", 20, "scale: racks the nodes are spread over (rack-00 is real: an FRR leaf and two speakers)")
	flag.IntVar(&so.services, "scale-services", 10000, "scale: LoadBalancer Services")
	flag.IntVar(&so.extraSpeakers, "scale-extra-speakers", 40, "scale: speakers of the other racks started at once to count the writes they cause")
	flag.StringVar(&so.binDir, "bin-dir", "", "scale: directory holding the openelb-cloud-controller-manager and openelb-speaker to measure, e.g. an older build's bin/ (default: this repository's bin/)")
	flag.StringVar(&so.deployDir, "deploy-dir", "", "scale: the CRDs and RBAC those binaries were built for (default: the deploy/ beside -bin-dir)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, suite := range strings.Split(*suites, ",") {
		var err error
		switch strings.TrimSpace(suite) {
		case "alloc":
			err = run(ctx, *single, *bursts, *creators)
		case "routes":
			err = runRoutes(ctx, ints(*routeSizes), *rounds)
		case "layer2":
			err = runLayer2(ctx)
		case "steady":
			err = runSteady(ctx, ints(*bursts), *creators)
		case "throughput":
			err = runThroughput(ctx, *throughputServices, *creators)
		case "faults":
			err = runFaults(ctx, ints(*faultSizes), *creators)
		case "scale":
			so.flips, so.creators = *rounds, *creators
			err = runScale(ctx, so)
		default:
			err = fmt.Errorf("unknown suite %q", suite)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// cpuSeconds reads a process's user+system CPU time from /proc.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// rssMiB reads a process's resident set size from /proc.
func rssMiB(pid int) float64 { return statusMiB(pid, "VmRSS:") }

type usage map[string]float64

func sample(pids map[string]int) usage {
	u := usage{}
	for n, pid := range pids {
		u[n] = cpuSeconds(pid)
	}
	return u
}

type result struct {
	name                string
	n                   int
	p50, p99, max       time.Duration
	createSpan, lastLag time.Duration
	writes              map[string]float64
	cpu                 usage
	ccmRSS              float64
}

// startControlPlane starts etcd, kube-apiserver and kube-controller-manager
// with the CRDs and the CCM's namespace. nodeLab turns the node lifecycle
// controller off: there are no kubelets, the bench writes node status.
// opts may name the binaries and manifests of another build.
func startControlPlane(ctx context.Context, nodeLab bool, opts harness.Options) (*harness.ControlPlane, error) {
	opts.ControllerManager = true
	if nodeLab {
		opts.ExtraControllerManagerFlags = []string{"--controllers=*,-node-lifecycle-controller"}
	}
	cp, err := harness.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := cp.ApplyCRDs(ctx); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	if err := cp.EnsureNamespace(ctx, harness.CCMNamespace, nil); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return cp, nil
}

// startAllocLab starts the control plane, one default pool large enough
// for every Service of a run, and the CCM with its shipped defaults plus
// BENCH_CCM_FLAGS (for diagnosis, e.g. --v=4) and extra. The pool is a
// layer2 pool: the lab has no nodes or BGP peers, and a BGP pool would make
// every plan carry a (true) "no eligible nodes" condition - one extra write
// per Service that a healthy cluster does not pay. The caller stops both.
func startAllocLab(ctx context.Context, extra ...string) (*harness.ControlPlane, *harness.Component, error) {
	cp, err := startControlPlane(ctx, false, harness.Options{})
	if err != nil {
		return nil, nil, err
	}
	err = createBenchPool(ctx, cp)
	var ccm *harness.Component
	if err == nil {
		ccm, err = startBenchCCM(cp, extra...)
	}
	if err != nil {
		_ = cp.Stop()
		return nil, nil, err
	}
	return cp, ccm, nil
}

// createBenchPool creates the alloc lab's default layer2 Eip, 10.128.0.0/14
// (see startAllocLab).
func createBenchPool(ctx context.Context, cp *harness.ControlPlane) error {
	crd, err := client.New(cp.Config, client.Options{Scheme: apischeme.New()})
	if err != nil {
		return fmt.Errorf("CRD client: %w", err)
	}
	err = crd.Create(ctx, &v1alpha2.Eip{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Annotations: map[string]string{v1alpha2.AnnotationDefaultEip: "true"}},
		Spec:       v1alpha2.EipSpec{Address: "10.128.0.0/14", Protocol: v1alpha2.ProtocolLayer2, Interface: "eth0"},
	})
	if err != nil {
		return fmt.Errorf("creating the bench Eip: %w", err)
	}
	return nil
}

// startBenchCCM starts the CCM with its shipped defaults plus
// BENCH_CCM_FLAGS and extra.
func startBenchCCM(cp *harness.ControlPlane, extra ...string) (*harness.Component, error) {
	return cp.StartCCM("ccm", append(strings.Fields(os.Getenv("BENCH_CCM_FLAGS")), extra...)...)
}

// settle is how long a scenario waits before counting writes: the CCM binds
// reserved claims and emits events at most 15 s after an allocation.
const settle = 16 * time.Second

func run(ctx context.Context, single int, bursts string, creators int) error {
	cp, ccm, err := startAllocLab(ctx)
	if err != nil {
		return err
	}
	defer cp.Stop()
	defer ccm.Stop()
	if os.Getenv("BENCH_KEEP_LOG") != "" {
		defer func() { _ = exec.Command("cp", ccm.LogPath(), os.Getenv("BENCH_KEEP_LOG")).Run() }()
	}

	pids := cp.PIDs()
	pids["openelb-ccm"] = ccm.Pid()
	measure := func(r *result, before usage) {
		after := sample(pids)
		r.cpu = usage{}
		for n := range after {
			r.cpu[n] = after[n] - before[n]
		}
		r.ccmRSS = rssMiB(ccm.Pid())
	}

	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	cs := kubernetes.NewForConfigOrDie(cfg)
	w := newWatcher(cs)
	defer w.stop()

	var results []result
	// Warm-up: the CCM must lead and be ready before anything is timed.
	if err := cp.EnsureNamespace(ctx, "warmup", nil); err != nil {
		return err
	}
	if _, err := createAndWait(ctx, cs, w, "warmup", "w0"); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}

	if single > 0 {
		if err := cp.EnsureNamespace(ctx, "single", nil); err != nil {
			return err
		}
		before, _ := writes(ctx, cs)
		cpu0 := sample(pids)
		var lat []time.Duration
		for i := range single {
			d, err := createAndWait(ctx, cs, w, "single", fmt.Sprintf("s-%d", i))
			if err != nil {
				return err
			}
			lat = append(lat, d)
		}
		time.Sleep(settle) // let asynchronous writes (plans, claim binds, events) land
		after, _ := writes(ctx, cs)
		r := summarize("one at a time", lat)
		r.writes = perService(before, after, single)
		measure(&r, cpu0)
		results = append(results, r)
	}
	for _, s := range strings.Split(bursts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			continue
		}
		ns := fmt.Sprintf("burst-%d", n)
		if err := cp.EnsureNamespace(ctx, ns, nil); err != nil {
			return err
		}
		before, _ := writes(ctx, cs)
		cpu0 := sample(pids)
		r, err := burst(ctx, cs, w, ns, n, creators)
		if err != nil {
			return err
		}
		time.Sleep(settle)
		after, _ := writes(ctx, cs)
		r.writes = perService(before, after, n)
		measure(&r, cpu0)
		results = append(results, r)
	}
	print(results)
	// BENCH_DUMP_METRICS=file keeps the API server's metrics for diagnosis.
	if f := os.Getenv("BENCH_DUMP_METRICS"); f != "" {
		raw, _ := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		_ = os.WriteFile(f, raw, 0o644)
	}
	return nil
}

func newService(ns, name string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{
			Type:  v1.ServiceTypeLoadBalancer,
			Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}},
			// The NodePort range runs out near 2,700 Services.
			AllocateLoadBalancerNodePorts: ptr.To(false),
		},
	}
}

// watcher records when each Service was first seen with an address.
type watcher struct {
	mu     sync.Mutex
	first  map[string]time.Time
	notify map[string]chan struct{}
	done   chan struct{}
}

func newWatcher(cs kubernetes.Interface) *watcher {
	w := &watcher{first: map[string]time.Time{}, notify: map[string]chan struct{}{}, done: make(chan struct{})}
	see := func(o any) {
		s, ok := o.(*v1.Service)
		if !ok || len(s.Status.LoadBalancer.Ingress) == 0 {
			return
		}
		now := time.Now()
		key := s.Namespace + "/" + s.Name
		w.mu.Lock()
		if _, ok := w.first[key]; !ok {
			w.first[key] = now
			if ch := w.notify[key]; ch != nil {
				close(ch)
			}
		}
		w.mu.Unlock()
	}
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "services", "", fields.Everything()),
		ObjectType:    &v1.Service{},
		Handler:       cache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, o any) { see(o) }},
	})
	go ctrl.Run(w.done)
	return w
}

func (w *watcher) stop() { close(w.done) }

func (w *watcher) wait(key string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	if _, ok := w.first[key]; ok {
		close(ch)
		return ch
	}
	w.notify[key] = ch
	return ch
}

func (w *watcher) seen(key string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.first[key]
	return t, ok
}

func createAndWait(ctx context.Context, cs kubernetes.Interface, w *watcher, ns, name string) (time.Duration, error) {
	ch := w.wait(ns + "/" + name)
	start := time.Now()
	if os.Getenv("BENCH_TRACE") != "" {
		defer func() {
			t, _ := w.seen(ns + "/" + name)
			fmt.Fprintf(os.Stderr, "trace %s create-start %s seen %s\n", name, start.Format("15:04:05.000000"), t.Format("15:04:05.000000"))
		}()
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, newService(ns, name), metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	select {
	case <-ch:
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("%s/%s got no address within 60s", ns, name)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	t, _ := w.seen(ns + "/" + name)
	return t.Sub(start), nil
}

// inParallel runs do(0..n-1) on workers goroutines and returns the first
// error; a worker stops at its first error.
func inParallel(workers, n int, do func(i int) error) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	err, _ := firstErr.Load().(error)
	return err
}

func burst(ctx context.Context, cs kubernetes.Interface, w *watcher, ns string, n, creators int) (result, error) {
	created, begin, lastCreate, err := createAll(ctx, cs, ns, n, creators)
	if err != nil {
		return result{}, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	var lat []time.Duration
	var lastIP time.Time
	for i := 0; i < n; {
		t, ok := w.seen(fmt.Sprintf("%s/b-%d", ns, i))
		if !ok {
			if time.Now().After(deadline) {
				return result{}, fmt.Errorf("%s: %d of %d Services have no address after 5 minutes", ns, n-i, n)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		lat = append(lat, t.Sub(created[i]))
		if t.After(lastIP) {
			lastIP = t
		}
		i++
	}
	r := summarize(fmt.Sprintf("burst, %d creators", creators), lat)
	r.createSpan = lastCreate.Sub(begin)
	r.lastLag = lastIP.Sub(lastCreate)
	return r, nil
}

// createAll creates Services b-0..b-(n-1) in ns with creators concurrent
// clients, as fast as the API server accepts them. It returns when each
// create started, and when the first started and the last returned.
func createAll(ctx context.Context, cs kubernetes.Interface, ns string, n, creators int) (created []time.Time, begin, lastCreate time.Time, err error) {
	created = make([]time.Time, n)
	begin = time.Now()
	err = inParallel(creators, n, func(i int) error {
		start := time.Now()
		if _, err := cs.CoreV1().Services(ns).Create(ctx, newService(ns, fmt.Sprintf("b-%d", i)), metav1.CreateOptions{}); err != nil {
			return err
		}
		created[i] = start
		return nil
	})
	return created, begin, time.Now(), err
}

func summarize(name string, lat []time.Duration) result {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return result{name: name, n: len(lat), p50: q(0.50), p99: q(0.99), max: lat[len(lat)-1]}
}

// writes reads the API server's write counters for the kinds a
// LoadBalancer Service causes writes to, keyed "verb resource[/subresource]".
func writes(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	all, err := harness.APIWrites(ctx, cs)
	if err != nil {
		return nil, err
	}
	return harness.WritesDelta(nil, all, "services", "events", "ipclaims", "loadbalancerplans", "eips"), nil
}

func perService(before, after map[string]float64, n int) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d / float64(n)
		}
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func print(results []result) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\ncreate→IP (real CCM, shipped defaults, local kube-apiserver 1.37.2 + etcd 3.6 on tmpfs)")
	fmt.Fprintln(tw, "scenario\tServices\tp50\tp99\tmax\tcreates took\tlast create→last IP")
	for _, r := range results {
		span, lag := "-", "-"
		if r.createSpan > 0 {
			span, lag = ms(r.createSpan), ms(r.lastLag)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.name, r.n, ms(r.p50), ms(r.p99), ms(r.max), span, lag)
	}
	tw.Flush()
	printWrites(results)
	fmt.Fprintln(tw, "\nCPU seconds used during each scenario (2 cores), and the CCM's RSS after it")
	header := "process"
	for _, r := range results {
		header += fmt.Sprintf("\t%s (%d)", r.name, r.n)
	}
	fmt.Fprintln(tw, header)
	var procs []string
	for n := range results[0].cpu {
		procs = append(procs, n)
	}
	sort.Strings(procs)
	for _, p := range procs {
		row := p
		for _, r := range results {
			row += fmt.Sprintf("\t%.1f s", r.cpu[p])
		}
		fmt.Fprintln(tw, row)
	}
	row := "openelb-ccm RSS"
	for _, r := range results {
		row += fmt.Sprintf("\t%.0f MiB", r.ccmRSS)
	}
	fmt.Fprintln(tw, row)
	tw.Flush()
}

// printWrites prints, per request ("verb resource[/subresource]"), the API
// writes each scenario's Services cost on average, a column per scenario.
func printWrites(results []result) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nAPI writes per Service (kube-apiserver request counters; creates of the Services themselves included)")
	keys := map[string]bool{}
	for _, r := range results {
		for k := range r.writes {
			keys[k] = true
		}
	}
	var ks []string
	for k := range keys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	header := "request"
	for _, r := range results {
		header += fmt.Sprintf("\t%s (%d)", r.name, r.n)
	}
	fmt.Fprintln(tw, header)
	for _, k := range ks {
		row := k
		for _, r := range results {
			row += fmt.Sprintf("\t%.2f", r.writes[k])
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
}
