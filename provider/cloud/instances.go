package cloud

import (
	"context"
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
)

// ProviderIDPrefix starts every node's provider ID: openelb://<node>.
const ProviderIDPrefix = ProviderName + "://"

// TaintOutOfService is the taint an admin puts on a node that is powered
// off; it is the only shutdown signal a bare-metal provider can trust.
const TaintOutOfService = "node.kubernetes.io/out-of-service"

// Instances is a minimal InstancesV2 for bare metal: there is no cloud API
// to ask, so the Node object is the source of truth. Its job is to let the
// cloud node controller initialize nodes of kubelets started with
// --cloud-provider=external.
type Instances struct {
	p *Provider
}

var _ cloudprovider.InstancesV2 = (*Instances)(nil)

// InstanceExists is true: a bare-metal machine exists as long as its Node
// does. Answering false would make the node lifecycle controller delete
// the Node.
func (i *Instances) InstanceExists(ctx context.Context, node *v1.Node) (bool, error) {
	return true, nil
}

// InstanceShutdown is true when an admin marked the node out of service.
func (i *Instances) InstanceShutdown(ctx context.Context, node *v1.Node) (bool, error) {
	for _, t := range node.Spec.Taints {
		if t.Key == TaintOutOfService {
			return true, nil
		}
	}
	return false, nil
}

// InstanceMetadata gives the provider ID openelb://<node> and the node's
// addresses: those it reports, else the IP kubelet was given with
// --node-ip (annotation alpha.kubernetes.io/provided-node-ip), plus its
// hostname.
func (i *Instances) InstanceMetadata(ctx context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	if node.Name == "" {
		return nil, fmt.Errorf("node without a name")
	}
	md := &cloudprovider.InstanceMetadata{
		ProviderID:   ProviderIDPrefix + node.Name,
		InstanceType: "bare-metal",
	}
	seen := map[v1.NodeAddress]bool{}
	add := func(a v1.NodeAddress) {
		if a.Address != "" && !seen[a] {
			seen[a] = true
			md.NodeAddresses = append(md.NodeAddresses, a)
		}
	}
	for _, a := range node.Status.Addresses {
		add(a)
	}
	if ip := node.Annotations["alpha.kubernetes.io/provided-node-ip"]; ip != "" {
		for _, one := range strings.Split(ip, ",") {
			add(v1.NodeAddress{Type: v1.NodeInternalIP, Address: strings.TrimSpace(one)})
		}
	}
	add(v1.NodeAddress{Type: v1.NodeHostName, Address: node.Name})
	return md, nil
}
