package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

var (
	steadySettle = flag.Duration("settle", 60*time.Second, "steady: how long the CCM rests after the last Service got its address before it is measured; scale: how long the cluster rests after its last write")
	steadyWindow = flag.Duration("rate-window", 30*time.Second, "steady, scale: window over which API requests at rest are counted")
)

// steadyRow is one measurement of the CCM at rest.
type steadyRow struct {
	services  int
	createCPU float64       // CCM CPU seconds from the first create to the last address
	lag       time.Duration // last create → last address
	rss       float64       // MiB, /proc/<pid>/status VmRSS
	rssAnon   float64       // of which anonymous memory (heap, stacks)
	rssFile   float64       // of which file pages (the binary's text and data)
	mem       map[string]float64
	cpu       float64 // CCM CPU seconds during the window
	apiRate   float64 // every client's requests/s at the API server
	ccmRate   float64 // the CCM's own requests/s (its client-go counter)
	ccmMetric bool    // whether the CCM's /metrics answered
}

// runSteady measures the CCM with many LoadBalancer Services and nothing
// changing: its RSS and Go heap, and the API requests it makes at rest.
// Services are added cumulatively up to each size, one control plane for
// all sizes; one Service created alone first proves the CCM leads and gives
// the baseline row.
func runSteady(ctx context.Context, sizes []int, creators int) error {
	profile := os.Getenv("BENCH_HEAP_PROFILE")
	var extra []string
	if profile != "" {
		// The harness allows /metrics without a token; the profile needs
		// the same (--profiling is on by default).
		extra = append(extra, "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics,/debug/pprof/*")
	}
	cp, ccm, err := startAllocLab(ctx, extra...)
	if err != nil {
		return err
	}
	defer cp.Stop()
	defer ccm.Stop()

	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	cs := kubernetes.NewForConfigOrDie(cfg)
	w := newWatcher(cs)
	defer w.stop()
	const ns = "steady"
	if err := cp.EnsureNamespace(ctx, ns, nil); err != nil {
		return err
	}
	if _, err := createAndWait(ctx, cs, w, ns, "s-0"); err != nil {
		return fmt.Errorf("first Service: %w", err)
	}
	lastIP, _ := w.seen(ns + "/s-0")

	created := 1
	var rows []steadyRow
	for _, target := range append([]int{1}, sizes...) {
		if target < created {
			continue
		}
		var createCPU float64
		var lag time.Duration
		if target > created {
			fmt.Fprintf(os.Stderr, "steady: creating Services %d..%d\n", created, target-1)
			cpu0 := cpuSeconds(ccm.Pid())
			from := created
			err := inParallel(creators, target-from, func(i int) error {
				name := fmt.Sprintf("s-%d", from+i)
				_, err := cs.CoreV1().Services(ns).Create(ctx, newService(ns, name), metav1.CreateOptions{})
				return err
			})
			if err != nil {
				return err
			}
			lastCreate := time.Now()
			created = target
			if lastIP, err = waitAddresses(ctx, w, ns, created); err != nil {
				return err
			}
			createCPU, lag = cpuSeconds(ccm.Pid())-cpu0, lastIP.Sub(lastCreate)
		}
		r, err := measureSteady(ctx, cs, ccm, created, lastIP)
		if err != nil {
			return err
		}
		r.createCPU, r.lag = createCPU, lag
		rows = append(rows, r)
		if profile != "" {
			if err := saveHeapProfile(ccm, fmt.Sprintf("%s.%d", profile, created)); err != nil {
				fmt.Fprintln(os.Stderr, "steady: heap profile:", err)
			}
		}
	}
	printSteady(rows)
	return nil
}

// waitAddresses waits until Services s-0..s-(n-1) all have an address and
// returns when the last one got it.
func waitAddresses(ctx context.Context, w *watcher, ns string, n int) (time.Time, error) {
	deadline := time.Now().Add(5 * time.Minute)
	var last time.Time
	for i := 0; i < n; {
		t, ok := w.seen(fmt.Sprintf("%s/s-%d", ns, i))
		if !ok {
			if time.Now().After(deadline) {
				return last, fmt.Errorf("%s: %d of %d Services have no address after 5 minutes", ns, n-i, n)
			}
			select {
			case <-ctx.Done():
				return last, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if t.After(last) {
			last = t
		}
		i++
	}
	return last, nil
}

// measureSteady lets the CCM rest for -settle after the last address, then
// samples its memory and counts API requests over -rate-window.
func measureSteady(ctx context.Context, cs kubernetes.Interface, ccm *harness.Component, n int, lastIP time.Time) (steadyRow, error) {
	select {
	case <-ctx.Done():
		return steadyRow{}, ctx.Err()
	case <-time.After(time.Until(lastIP.Add(*steadySettle))):
	}
	r := steadyRow{services: n}
	api0, err := apiRequests(ctx, cs)
	if err != nil {
		return r, err
	}
	ccm0, ok0 := ccmMetrics(ccm)
	cpu0 := cpuSeconds(ccm.Pid())
	time.Sleep(*steadyWindow)
	api1, err := apiRequests(ctx, cs)
	if err != nil {
		return r, err
	}
	ccm1, ok1 := ccmMetrics(ccm)
	r.cpu = cpuSeconds(ccm.Pid()) - cpu0
	r.rss, r.rssAnon, r.rssFile = rssMiB(ccm.Pid()), statusMiB(ccm.Pid(), "RssAnon:"), statusMiB(ccm.Pid(), "RssFile:")
	// The window's own scrape of the API server's /metrics is one request.
	r.apiRate = (api1 - api0 - 1) / steadyWindow.Seconds()
	if ok0 && ok1 {
		r.ccmMetric = true
		r.mem = ccm1
		r.ccmRate = (ccm1["rest_client_requests_total"] - ccm0["rest_client_requests_total"]) / steadyWindow.Seconds()
	}
	return r, nil
}

// apiRequests sums the API server's apiserver_request_total over every
// label set: all requests any client completed.
func apiRequests(ctx context.Context, cs kubernetes.Interface) (float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	return sumMetrics(strings.NewReader(string(raw)), "apiserver_request_total")["apiserver_request_total"], nil
}

// ccmHTTP talks to the CCM's secure port, which serves a self-signed
// certificate on loopback.
var ccmHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// ccmMetrics reads the CCM's memory figures and client request counter from
// its /metrics; false when it did not answer.
func ccmMetrics(ccm *harness.Component) (map[string]float64, bool) {
	m, err := scrape(ccmHTTP, fmt.Sprintf("https://127.0.0.1:%d/metrics", ccm.SecurePort), byName("go_memstats_heap_inuse_bytes",
		"go_memstats_heap_alloc_bytes", "go_memstats_next_gc_bytes", "rest_client_requests_total"))
	return m, err == nil
}

// scrape reads a /metrics endpoint and sums its samples with sumMetricsBy.
func scrape(hc *http.Client, url string, group func(name, labels string) string) (map[string]float64, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return sumMetricsBy(resp.Body, group), nil
}

// sumMetrics adds up the samples of each named metric (every label set) in
// a Prometheus text exposition.
func sumMetrics(r io.Reader, names ...string) map[string]float64 {
	return sumMetricsBy(r, byName(names...))
}

// byName groups the samples of the named metrics by metric name.
func byName(names ...string) func(name, labels string) string {
	return func(name, _ string) string {
		if slices.Contains(names, name) {
			return name
		}
		return ""
	}
}

// sumMetricsBy adds up the samples of a Prometheus text exposition under
// the key group gives each (from its metric name and the text between its
// braces); samples it gives "" are left out.
func sumMetricsBy(r io.Reader, group func(name, labels string) string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.IndexAny(line, "{ ")
		if i <= 0 || line[0] == '#' {
			continue
		}
		var labels string
		if line[i] == '{' {
			labels = line[i+1 : max(i+1, strings.LastIndexByte(line, '}'))]
		}
		key := group(line[:i], labels)
		if key == "" {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndex(line, " ")+1:]), 64); err == nil {
			out[key] += v
		}
	}
	return out
}

// statusMiB reads one kB field of /proc/<pid>/status.
func statusMiB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func saveHeapProfile(ccm *harness.Component, path string) error {
	if err := download(ccmHTTP, fmt.Sprintf("https://127.0.0.1:%d/debug/pprof/heap", ccm.SecurePort), path); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "steady: heap profile written to", path)
	return nil
}

// download writes what c GETs at url (a profile, a metrics page) to file.
func download(c *http.Client, url, file string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, body, 0o644)
}

func printSteady(rows []steadyRow) {
	mib := func(r steadyRow, k string) string {
		if !r.ccmMetric {
			return "-"
		}
		return fmt.Sprintf("%.0f MiB", r.mem[k]/(1<<20))
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nsteady state (real CCM, shipped defaults; at rest %s after the last Service got its address; target: CCM ≤ 150 MB RSS)\n", *steadySettle)
	fmt.Fprintf(tw, "Services\tcreation: CCM CPU\tlast create→last IP\tCCM RSS\tanon / file\theap in use\theap alloc\tGC goal\tCCM CPU at rest\tCCM requests/s\tall API requests/s\n")
	for _, r := range rows {
		ccmRate := "-"
		if r.ccmMetric {
			ccmRate = fmt.Sprintf("%.2f", r.ccmRate)
		}
		createCPU, lag := "-", "-"
		if r.lag > 0 {
			createCPU, lag = fmt.Sprintf("%.1f s", r.createCPU), ms(r.lag)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f MiB\t%.0f / %.0f MiB\t%s\t%s\t%s\t%.2f s\t%s\t%.2f\n", r.services, createCPU, lag,
			r.rss, r.rssAnon, r.rssFile,
			mib(r, "go_memstats_heap_inuse_bytes"), mib(r, "go_memstats_heap_alloc_bytes"), mib(r, "go_memstats_next_gc_bytes"),
			r.cpu, ccmRate, r.apiRate)
	}
	tw.Flush()
	fmt.Printf("CCM RSS: VmRSS; anon / file: RssAnon / RssFile (file: the binary's pages). Heap figures: the CCM's go_memstats. "+
		"At rest: over %s, starting %s after the last address. CCM requests/s: its rest_client_requests_total; "+
		"all API requests/s: the API server's apiserver_request_total (every client: kube-controller-manager, the bench's watch, the CCM).\n",
		*steadyWindow, *steadySettle)
}
