// Command openelb-speaker is the node agent: while its node is a speaker
// of its rack's LoadBalancerRack, it advertises the BGP addresses of the
// LoadBalancerPlans over BGP (embedded GoBGP) to the routers its BgpPeers
// select, with the rack's next hops; it answers ARP/NDP for the addresses
// of layer-2 pools that it owns (one node per address, spread over the
// nodes that can answer, agreed through one Lease per node); and it reports
// in its node's LoadBalancerSpeaker.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/metrics/legacyregistry"

	// client-go's request metrics (rest_client_requests_total...) on /metrics.
	_ "k8s.io/component-base/metrics/prometheus/restclient"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/nodeagent/agent"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
)

func main() {
	// What the speaker holds lives as long as the process: the plans it
	// announces, its rack, and GoBGP's RIB of Services × next hops paths
	// (40,000 with 10,000 Services and four next hops). GOGC=100 lets the
	// heap grow to twice that before a collection, and the process keeps
	// what it grew; a quarter of headroom keeps a speaker near what it
	// holds. The extra collections cost little: a steady speaker allocates
	// almost nothing, and a reconcile of 40,000 paths triggers one or two.
	// GOGC in the environment still wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(25)
	}
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file; empty: in-cluster config")
	nodeName := flag.String("node-name", os.Getenv("NODE_NAME"), "name of the node this speaker runs on (default $NODE_NAME)")
	namespace := flag.String("namespace", envOr("POD_NAMESPACE", "openelb-system"), "namespace of the layer-2 election Leases (default $POD_NAMESPACE)")
	secretsNamespace := flag.String("bgp-secrets-namespace", agent.DefaultSecretsNamespace,
		"namespace of the Secrets BgpPeers name in spec.conf.authPasswordSecretRef, the only Secrets the speaker reads; keep nothing else there")
	healthAddr := flag.String("health-address", "127.0.0.1:10262",
		"host:port of /healthz (liveness), /readyz (readiness) and /metrics, plain HTTP; empty disables them. "+
			"Loopback by default; the shipped DaemonSet passes the node's address, [$(HOST_IP)]:10262 (brackets fit either family), "+
			"which kubelet probes and Prometheus reach. An empty host (:10262) listens on every address, the LoadBalancer addresses "+
			"the node answers for included. (10259 would clash with kube-scheduler on control-plane nodes.)")
	// Statuses are written only on change, one LoadBalancerSpeaker and the
	// node's entry of each BgpPeer, so a steady speaker sends nothing; the
	// layer-2 Lease renewals are the busiest writer. Routes never wait for
	// status writes either way.
	qps := flag.Float64("kube-api-qps", 20, "API requests per second the speaker may send")
	burst := flag.Int("kube-api-burst", 40, "API request burst")
	// Layer 2: one node per address answers ARP/NDP; each node renews one
	// Lease (see package election).
	lease := election.DefaultLeaseTimings
	flag.DurationVar(&lease.Duration, "layer2-lease-duration", lease.Duration,
		"how long a node's layer-2 Lease stays valid without renewal: a dead node's addresses move after about this long (whole seconds)")
	flag.DurationVar(&lease.RenewDeadline, "layer2-renew-deadline", lease.RenewDeadline,
		"how long after its last successful renewal a node keeps answering when renewals fail (below the lease duration)")
	flag.DurationVar(&lease.RetryPeriod, "layer2-retry-period", lease.RetryPeriod,
		"how often a node renews its layer-2 Lease (while it is a candidate of some pool), and the wait before a failed write is retried")
	garpCount := flag.Int("layer2-gratuitous-count", layer2.DefaultAnnounceCount,
		"gratuitous ARPs / unsolicited neighbor advertisements sent per address on taking it over or when its MAC changes")
	garpInterval := flag.Duration("layer2-gratuitous-interval", layer2.DefaultAnnounceInterval,
		"interval between them; keep it above 1s (Linux ignores a second update of a neighbour entry within its 1s locktime)")
	klog.InitFlags(nil)
	dataPathPort := flag.Int("data-path-health-port", agent.DefaultDataPathPort,
		"port of the nodes' kube-proxy health check, probed on every next hop of this node's rack and on this node: a node whose check passed once and then fails twice in a row leaves the next hops (and layer-2 answering) until it passes twice; 0: not probed")
	dataPathPath := flag.String("data-path-health-path", agent.DefaultDataPathPath, "HTTP path of that health check")
	dataPathInterval := flag.Duration("data-path-probe-interval", agent.DefaultDataPathInterval, "how often each node's health check is probed (each probe times out after as long)")
	countsInterval := flag.Duration("report-counts-interval", agent.DefaultCountsInterval,
		"least time between status writes that only change counts (advertised prefixes and paths): a burst of new Services costs one write per interval, not one per Service; session, problem and layer-2 changes are written at once")
	profiling := flag.Bool("profiling", false, "serve Go's profiles (/debug/pprof/) on --health-address, for diagnosing CPU and memory")
	flag.Parse()
	if *nodeName == "" {
		klog.ErrorS(nil, "--node-name or $NODE_NAME is required")
		os.Exit(2)
	}
	if err := lease.Validate(); err != nil {
		klog.ErrorS(err, "Invalid --layer2-* Lease timings")
		os.Exit(2)
	}
	if *garpCount < 1 || *garpInterval <= 0 {
		klog.ErrorS(nil, "--layer2-gratuitous-count must be at least 1 and --layer2-gratuitous-interval positive")
		os.Exit(2)
	}
	if *healthAddr != "" {
		addr, err := listenAddress(*healthAddr)
		if err != nil {
			klog.ErrorS(err, "Invalid --health-address")
			os.Exit(2)
		}
		*healthAddr = addr
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := klog.Background().WithValues("node", *nodeName)
	ctx = klog.NewContext(ctx, logger)

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.ErrorS(err, "Cannot build the API client config")
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	speaker := bgp.NewGoBGP(logger.WithName("gobgp"))
	a, err := agent.New(cfg, agent.Options{NodeName: *nodeName, Namespace: *namespace, SecretsNamespace: *secretsNamespace, Speaker: speaker, CountsInterval: *countsInterval,
		Layer2:   agent.Layer2Options{Lease: lease, AnnounceCount: *garpCount, AnnounceInterval: *garpInterval},
		DataPath: agent.DataPathOptions{Port: *dataPathPort, Path: *dataPathPath, Interval: *dataPathInterval}})
	if err != nil {
		klog.ErrorS(err, "Cannot create the agent")
		os.Exit(1)
	}
	if *healthAddr != "" {
		serveHealth(ctx, *healthAddr, a, *profiling, stop)
	}
	runErr := a.Run(ctx)
	// On SIGTERM: withdraw, or keep routes stale at the routers when
	// graceful restart is configured (a rolling update then causes no churn).
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(shutdownCtx); err != nil {
		klog.ErrorS(err, "Stopping the BGP speaker failed")
	}
	if runErr != nil {
		klog.ErrorS(runErr, "Agent stopped")
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// listenAddress checks --health-address and returns it as net.Listen
// takes it. The host must be empty (every address), localhost or an IP
// address, bracketed or not, so a DaemonSet can pass [$(HOST_IP)]:port
// whatever the node's address family; an unset $(HOST_IP), left as is or
// expanded to nothing, is refused rather than taken as every address.
func listenAddress(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	switch {
	case host == "" && strings.HasPrefix(s, "["):
		return "", fmt.Errorf("%q: empty address in brackets (an unset variable?); leave the host out to listen on every address", s)
	case host == "", host == "localhost":
	default:
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("%q: host %q is not an IP address", s, host)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// serveHealth serves /healthz (a.Healthz), /readyz (a.Readyz), /metrics
// and, with profiling, Go's profiles on addr until ctx ends; fail is
// called if the listener fails. A failing check answers 503 with its
// reason: unlike the CCM's secure port, this endpoint is only on loopback
// or the node's address.
func serveHealth(ctx context.Context, addr string, a *agent.Agent, profiling bool, fail func()) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", checkHandler(a.Healthz))
	mux.HandleFunc("/readyz", checkHandler(a.Readyz))
	agent.ServeReadyMetric(a.Readyz) // openelb_speaker_ready: /readyz for Prometheus
	mux.Handle("/metrics", legacyregistry.Handler())
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Health endpoint failed")
			fail()
		}
	}()
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
}

// checkHandler answers "ok", or 503 with check's error.
func checkHandler(check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if err := check(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}
}
