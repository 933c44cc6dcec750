// Package scheme builds the runtime scheme both binaries decode with: the
// core Kubernetes kinds plus this project's network.kubesphere.io/v1alpha2.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// New returns a scheme with the core Kubernetes types and OpenELB's.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha2.AddToScheme(s))
	return s
}
