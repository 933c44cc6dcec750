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
}

// PlanPeer is a BgpPeer a rack's speakers announce to.
type PlanPeer struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	AS      uint32 `json:"as,omitempty"`
}

// RackPlan is the assignment for one rack: its speakers announce the
// Service's addresses to Peers with NextHops (this rack's eligible nodes).
type RackPlan struct {
	// Name of the rack (label openelb.kubesphere.io/rack; "" for unlabelled
	// nodes).
	Name string `json:"name"`
	// Speakers are the nodes of the rack that run the speaker.
	// +optional
	Speakers []string `json:"speakers,omitempty"`
	// Peers the speakers announce to.
	// +optional
	Peers []PlanPeer `json:"peers,omitempty"`
	// NextHops are the node addresses traffic for the Service may go to.
	// +optional
	NextHops []string `json:"nextHops,omitempty"`
}

// LoadBalancerPlanSpec is written by the CCM leader: the Service's addresses
// and who announces them. It is the contract between the CCM and the
// speakers.
type LoadBalancerPlanSpec struct {
	// ServiceUID ties the plan to one incarnation of the Service.
	ServiceUID types.UID `json:"serviceUID"`
	// Addresses of the Service, one per IP family.
	// +listType=atomic
	Addresses []PlanAddress `json:"addresses"`
	// ExternalTrafficPolicy of the Service (Cluster or Local).
	// +optional
	ExternalTrafficPolicy string `json:"externalTrafficPolicy,omitempty"`
	// Racks is the per-rack BGP assignment.
	// +optional
	// +listType=map
	// +listMapKey=name
	Racks []RackPlan `json:"racks,omitempty"`
}

// NodeAnnouncement is one speaker's report on a plan.
type NodeAnnouncement struct {
	// Advertised is true when this node's speaker advertises the addresses
	// over BGP.
	// +optional
	Advertised bool `json:"advertised,omitempty"`
	// Answering is true when this node answers ARP/NDP for the addresses.
	// +optional
	Answering bool `json:"answering,omitempty"`
	// MAC is, for layer-2 addresses, the hardware address of this node's
	// interface on the pool's segment, published by every node able to
	// answer there. For externalTrafficPolicy Local the answering node
	// answers with the MAC of a node that has a ready local endpoint.
	// +optional
	MAC string `json:"mac,omitempty"`
	// Reason says why not, or how (e.g. NoAddPath: advertised with itself
	// as next hop).
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message is the human-readable detail.
	// +optional
	Message string `json:"message,omitempty"`
	// LastUpdate is when the speaker last changed this entry.
	// +optional
	LastUpdate metav1.Time `json:"lastUpdate,omitempty"`
}

// LoadBalancerPlanStatus is written by the speakers, each under its node key.
type LoadBalancerPlanStatus struct {
	// Nodes is keyed by node name.
	// +optional
	Nodes map[string]NodeAnnouncement `json:"nodes,omitempty"`
	// Conditions set by the CCM about planning (e.g. a rack without a
	// speaker).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// LoadBalancerPlan says, for one LoadBalancer Service (same namespace and
// name, owned by it), which addresses it has and who announces them.
// `kubectl get lbplan` answers "who announces this IP to which router".
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lbplan,categories=networking
// +kubebuilder:printcolumn:name="IPs",type=string,JSONPath=`.spec.addresses[*].ip`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.addresses[*].pool`
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.addresses[*].protocol`
// +kubebuilder:printcolumn:name="Racks",type=string,JSONPath=`.spec.racks[*].name`
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
