package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PlanPeer is a BgpPeer a rack's speakers announce to.
type PlanPeer struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	// AS is the BgpPeer's peerAs (see BgpPeer for the bounds).
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	AS uint32 `json:"as,omitempty"`
}

// RackNextHop is one node of the rack that may carry Service traffic.
type RackNextHop struct {
	// Node name.
	Node string `json:"node"`
	// Addresses are the node's InternalIPs: a Service address is sent with
	// those of its own family.
	// +listType=atomic
	Addresses []string `json:"addresses"`
	// Labels are the node's labels that a BGP node selector reads (an
	// Eip's spec.bgp.nodeSelector or a Service's
	// openelb.kubesphere.io/bgp-node-selector), and only those: a change
	// of any other label writes nothing.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// GracefulShutdown marks a draining node announced with the
	// graceful-shutdown community until its delay ends (BgpConf
	// spec.gracefulShutdown): routers prefer the rack's other next hops.
	// +optional
	GracefulShutdown bool `json:"gracefulShutdown,omitempty"`
}

// LoadBalancerRackSpec is written by the CCM leader from the Nodes and the
// BgpPeers.
type LoadBalancerRackSpec struct {
	// Rack is the value of the nodes' openelb.kubesphere.io/rack label (""
	// for the nodes without it).
	Rack string `json:"rack"`
	// Speakers are the rack's Ready nodes labelled
	// lb.kubesphere.io/v1alpha1=openelb, sorted. A speaker announces only
	// while it is listed here.
	// +optional
	// +listType=atomic
	Speakers []string `json:"speakers,omitempty"`
	// Peers are the BgpPeers the speakers' labels match, sorted by name
	// (each speaker still matches the selectors against its own labels).
	// +optional
	// +listType=atomic
	Peers []PlanPeer `json:"peers,omitempty"`
	// NextHops are the rack's nodes that may carry traffic: Ready, not
	// labelled node.kubernetes.io/exclude-from-external-load-balancers, not
	// being deleted; sorted by node. Every BGP address of every Service is
	// sent with these next hops (for externalTrafficPolicy Local, with those
	// of the Service's endpointNodes).
	// +optional
	// +listType=atomic
	NextHops []RackNextHop `json:"nextHops,omitempty"`
}

// LoadBalancerRackStatus is written by the CCM.
type LoadBalancerRackStatus struct {
	// Conditions: Announced (True when the rack has next hops, speakers and
	// peers), and one per problem (RackWithoutSpeaker, RackNotAnnounced,
	// SpeakerWithoutPeer, PeerSpansRacks, NoPeers).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// LoadBalancerRack is the CCM's announcement plan for one rack, the same
// for every Service: which speakers announce to which BgpPeers with which
// next hops. Its name is the rack label's value when that is a valid object
// name, otherwise RackObjectName's derived one; spec.rack always holds the
// value. A node's readiness, exclusion, deletion or rack change rewrites
// the racks concerned and nothing else; each speaker watches only its own
// rack's object.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=lbrack,categories=networking
// +kubebuilder:printcolumn:name="Rack",type=string,JSONPath=`.spec.rack`
// +kubebuilder:printcolumn:name="Speakers",type=string,JSONPath=`.spec.speakers`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers[*].name`
// +kubebuilder:printcolumn:name="Next Hops",type=string,JSONPath=`.spec.nextHops[*].node`
// +kubebuilder:printcolumn:name="Announced",type=string,JSONPath=`.status.conditions[?(@.type=="Announced")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LoadBalancerRack struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LoadBalancerRackSpec   `json:"spec,omitempty"`
	Status LoadBalancerRackStatus `json:"status,omitempty"`
}

// LoadBalancerRackList is a list of LoadBalancerRack.
//
// +kubebuilder:object:root=true
type LoadBalancerRackList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LoadBalancerRack `json:"items"`
}
