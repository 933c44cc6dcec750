package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// PlanAddress is one address of a Service and how it is announced.
type PlanAddress struct {
	// IP is the address given to the Service.
	IP string `json:"ip"`
	// Pool is the Eip it came from ("" when the address was adopted from a
	// Service status and lies in no current pool).
	// +optional
	Pool string `json:"pool,omitempty"`
	// Protocol is the pool's protocol: bgp or layer2.
	// +optional
	Protocol string `json:"protocol,omitempty"`
	// Interface is the pool's layer-2 interface (layer2 only).
	// +optional
	Interface string `json:"interface,omitempty"`
	// Prefix is what is announced for the address (bgp only) when it is
	// not the address itself: the covering prefix of the pool's
	// spec.bgp.aggregationLength(V6). Unset: the address (/32, /128).
	// +optional
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="prefix must be a CIDR"
	Prefix string `json:"prefix,omitempty"`
	// BGP is the path attributes the address is announced with (bgp only):
	// the pool's spec.bgp with the Service's annotations applied. Unset:
	// none.
	// +optional
	BGP *BGPAttributes `json:"bgp,omitempty"`
}

// LoadBalancerPlanSpec is written by the CCM leader: the Service's addresses
// and what decides who announces them. It holds only what belongs to the
// Service itself; where its addresses are announced from (speakers, peers,
// next hops of each rack) is in the LoadBalancerRack objects, so a node
// event rewrites one rack object instead of every plan.
type LoadBalancerPlanSpec struct {
	// ServiceUID ties the plan to one incarnation of the Service.
	ServiceUID types.UID `json:"serviceUID"`
	// Addresses of the Service, one per IP family.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	Addresses []PlanAddress `json:"addresses"`
	// ExternalTrafficPolicy of the Service (Cluster or Local).
	// +optional
	ExternalTrafficPolicy string `json:"externalTrafficPolicy,omitempty"`
	// EndpointNodes are, for externalTrafficPolicy Local, the nodes with a
	// ready endpoint of the Service (sorted): its BGP next hops are the
	// rack next hops among them, and a layer-2 answer points at one of
	// them. Empty for Cluster.
	// +optional
	// +listType=atomic
	EndpointNodes []string `json:"endpointNodes,omitempty"`
}

// LoadBalancerPlanStatus is written by the CCM.
type LoadBalancerPlanStatus struct {
	// Conditions about the Service's own announcement (Planned;
	// NoLocalEndpoints for externalTrafficPolicy Local). Problems of the
	// racks (no speaker, no peer...) are conditions of the LoadBalancerRack
	// objects: they are the same for every Service.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// LoadBalancerPlan says, for one LoadBalancer Service (same namespace and
// name, owned by it), which addresses it has and how they are announced.
// BGP addresses are announced from every rack (`kubectl get lbrack`): each
// rack's speakers send them to the rack's BgpPeers with the rack's next
// hops (for externalTrafficPolicy Local, only those in endpointNodes).
// Each speaker's report is its LoadBalancerSpeaker (`kubectl get
// lbspeaker`).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lbplan,categories=networking
// +kubebuilder:printcolumn:name="IPs",type=string,JSONPath=`.spec.addresses[*].ip`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.addresses[*].pool`
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.addresses[*].protocol`
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.externalTrafficPolicy`
// +kubebuilder:printcolumn:name="Endpoint Nodes",type=string,JSONPath=`.spec.endpointNodes`,priority=1
// +kubebuilder:printcolumn:name="Planned",type=string,JSONPath=`.status.conditions[?(@.type=="Planned")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LoadBalancerPlan struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LoadBalancerPlanSpec   `json:"spec,omitempty"`
	Status LoadBalancerPlanStatus `json:"status,omitempty"`
}

// LoadBalancerPlanList is a list of LoadBalancerPlan.
//
// +kubebuilder:object:root=true
type LoadBalancerPlanList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LoadBalancerPlan `json:"items"`
}
