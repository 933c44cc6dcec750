// Command openelb-cloud-controller-manager is the cloud-controller-manager
// with the openelb provider: run it with --cloud-provider=openelb.
package main

import (
	"os"

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
	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("Cannot initialize options: %v", err)
	}
	cloud.ApplyDefaults(opts)
	cmd := app.NewCloudControllerManagerCommand(opts, newCloud, controller.InitFuncConstructors(),
		names.CCMControllerAliases(), cliflag.NamedFlagSets{}, wait.NeverStop)
	os.Exit(cli.Run(cmd))
}

// newCloud hands the provider to the framework directly (no registry).
func newCloud(c *config.CompletedConfig) cloudprovider.Interface {
	shared := c.ComponentConfig.KubeCloudShared.CloudProvider
	if shared.Name != cloud.ProviderName {
		klog.Fatalf("--cloud-provider=%q: this binary only serves %q", shared.Name, cloud.ProviderName)
	}
	if err := cloud.ReadConfigFile(shared.CloudConfigFile); err != nil {
		klog.Fatalf("Invalid --cloud-config: %v", err)
	}
	p, err := cloud.New(cloud.Options{Connect: func(cfg *rest.Config) (cloud.Cluster, error) {
		return kube.NewCluster(cfg, "openelb-cloud-controller-manager")
	}})
	if err != nil {
		klog.Fatalf("Cannot create the openelb provider: %v", err)
	}
	return p
}
