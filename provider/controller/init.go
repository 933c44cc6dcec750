package controller

import (
	"context"

	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	genericcontrollermanager "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/provider/cloud"
	"github.com/openelb/cloud-provider-openelb/provider/kube"
)

// InitFuncConstructors returns the framework's controllers with the
// service-lb-controller slot running this package's controller; every flag
// that enables, disables or tunes it (--controllers, --concurrent-service-syncs)
// keeps working.
//
// classes is read when the controller starts, after flag parsing.
func InitFuncConstructors(classes *cloud.Classes) map[string]app.ControllerInitFuncConstructor {
	out := make(map[string]app.ControllerInitFuncConstructor, len(app.DefaultInitFuncConstructors))
	for k, v := range app.DefaultInitFuncConstructors {
		out[k] = v
	}
	out[names.ServiceLBController] = app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "service-controller"},
		Constructor: func(ic app.ControllerInitContext, cfg *cloudcontrollerconfig.CompletedConfig, c cloudprovider.Interface) app.InitFunc {
			return start(ic, cfg, c, *classes)
		},
	}
	return out
}

func start(initContext app.ControllerInitContext, cfg *cloudcontrollerconfig.CompletedConfig, cp cloudprovider.Interface, classes cloud.Classes) app.InitFunc {
	return func(ctx context.Context, cctx genericcontrollermanager.ControllerContext) (controller.Interface, bool, error) {
		lb, ok := cp.LoadBalancer()
		if !ok {
			klog.FromContext(ctx).Info("The cloud provider has no LoadBalancer; service controller not started")
			return nil, false, nil
		}
		services := cfg.SharedInformers.Core().V1().Services()
		// The provider reads this informer too (provider/kube) and sets the
		// same transform; setting it here keeps the cache trimmed when the
		// controller runs with another provider. Informers are not started
		// yet here.
		if err := services.Informer().SetTransform(kube.TrimService); err != nil {
			klog.FromContext(ctx).V(2).Info("Could not set a transform on the Service informer", "err", err)
		}
		c, err := New(lb, cfg.ClientBuilder.ClientOrDie(initContext.ClientName),
			services, cfg.ComponentConfig.KubeCloudShared.ClusterName, classes)
		if err != nil {
			return nil, false, err
		}
		go c.Run(ctx, int(cfg.ComponentConfig.ServiceController.ConcurrentServiceSyncs))
		// Returned so the framework mounts its health check (Check): the
		// framework's default, a ping, would pass while the provider is
		// still re-adopting addresses or has given up.
		return c, true, nil
	}
}
