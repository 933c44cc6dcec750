// Command openelb-cloud-controller-manager is the cloud-controller-manager
// with the openelb provider: run it with --cloud-provider=openelb.
package main

import (
	"os"
	"runtime/debug"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // build info on /metrics
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/provider/cloud"
	"github.com/openelb/cloud-provider-openelb/provider/controller"
	"github.com/openelb/cloud-provider-openelb/provider/kube"
)

func main() {
	// The heap is almost all informer caches (Services, IPClaims, plans),
	// live as long as the process; GOGC=100 lets a burst's garbage grow the
	// heap to twice that and the runtime keeps what it grew. Half the
	// headroom keeps the CCM within its 150 MB target (steady 10,000 Services:
	// 131 MiB RSS instead of 151 MiB, `bench -suites steady`) at no
	// measurable CPU cost (62 s either way for the 10,000 creates). A
	// memory limit would not scale with the number of Services; GOGC in
	// the environment still wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(50)
	}
	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("Cannot initialize options: %v", err)
	}
	cloud.ApplyDefaults(opts)
	var flags cliflag.NamedFlagSets
	fs := flags.FlagSet("openelb")
	fs.IntVar(&reservations, "reservations-per-pool", cloud.DefaultReservations,
		"Addresses per pool the leader claims ahead of demand, so a new Service's status is written without waiting for its IPClaim. 0 claims at allocation time. Ignored (0) with --leader-elect=false: reservations are only safe with a single allocating replica.")
	fs.DurationVar(&staleGrace, "stale-reservation-grace", cloud.DefaultForeignGrace,
		"How long reservations an earlier leader left unused stay held before they are deleted; keep it above the API server's --request-timeout.")
	fs.BoolVar(&ignoreClassless, "ignore-classless-services", false,
		"Leave LoadBalancer Services without spec.loadBalancerClass to another implementation (the cluster's default load balancer); serve only those of class "+cloud.LoadBalancerClass+", which are served either way.")
	cmd := app.NewCloudControllerManagerCommand(opts, newCloud, controller.InitFuncConstructors(&classes),
		names.CCMControllerAliases(), flags, wait.NeverStop)
	os.Exit(cli.Run(cmd))
}

// Set by the openelb flag set before newCloud runs.
var (
	reservations    int
	staleGrace      time.Duration
	ignoreClassless bool
	// classes is filled from ignoreClassless in newCloud, before any
	// controller starts.
	classes cloud.Classes
)

// newCloud hands the provider to the framework directly (no registry).
func newCloud(c *config.CompletedConfig) cloudprovider.Interface {
	shared := c.ComponentConfig.KubeCloudShared.CloudProvider
	if shared.Name != cloud.ProviderName {
		klog.Fatalf("--cloud-provider=%q: this binary only serves %q", shared.Name, cloud.ProviderName)
	}
	if err := cloud.ReadConfigFile(shared.CloudConfigFile); err != nil {
		klog.Fatalf("Invalid --cloud-config: %v", err)
	}
	// The provider reads Services and Nodes from the framework's shared
	// informers, which its controllers keep anyway, rather than caching
	// every Service a second time. They are requested now, before the
	// framework starts the factory: the provider connects in the
	// background and retries, maybe after that.
	if err := kube.RequestSharedInformers(c.SharedInformers); err != nil {
		klog.Fatalf("Cannot request the shared informers: %v", err)
	}
	opts := cloud.Options{Connect: func(cfg *rest.Config) (cloud.Cluster, error) {
		return kube.NewCluster(cfg, c.SharedInformers, "openelb-cloud-controller-manager")
	}}
	// Reserved claims are only safe when a single replica allocates at a
	// time, which leader election guarantees; without it every replica
	// claims each address at allocation time.
	if c.ComponentConfig.Generic.LeaderElection.LeaderElect {
		opts.Reservations = reservations
	}
	opts.ForeignGrace = staleGrace
	classes = cloud.Classes{IgnoreClassless: ignoreClassless}
	opts.Classes = classes
	p, err := cloud.New(opts)
	if err != nil {
		klog.Fatalf("Cannot create the openelb provider: %v", err)
	}
	return p
}
