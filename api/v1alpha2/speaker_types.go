package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SpeakerSession is one BGP session of a speaker.
type SpeakerSession struct {
	// Peer is the BgpPeer's name.
	Peer string `json:"peer"`
	// Address of the neighbor.
	// +optional
	Address string `json:"address,omitempty"`
	// State is the BGP FSM state (established, active, connect...), or
	// unconfigured when the BgpPeer could not be used (see problems).
	State string `json:"state"`
	// AddPathNegotiated: each next hop is sent as its own path.
	// +optional
	AddPathNegotiated bool `json:"addPathNegotiated,omitempty"`
	// NextHopSelf: the router did not negotiate ADD-PATH, so it gets one
	// path per address with this node as next hop.
	// +optional
	NextHopSelf bool `json:"nextHopSelf,omitempty"`
	// AdvertisedPaths sent to this neighbor.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	AdvertisedPaths int32 `json:"advertisedPaths,omitempty"`
	// BfdState when BFD is on.
	// +optional
	BfdState string `json:"bfdState,omitempty"`
	// LastTransitionTime is when the state last changed.
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
}

// SpeakerLayer2 is this node's part in one layer-2 pool.
type SpeakerLayer2 struct {
	// Pool is the Eip.
	Pool string `json:"pool"`
	// Interface the pool is answered on, as resolved on this node.
	// +optional
	Interface string `json:"interface,omitempty"`
	// MAC of that interface; the answering node uses it to answer for an
	// externalTrafficPolicy Local Service whose endpoint is on this node.
	// +optional
	MAC string `json:"mac,omitempty"`
	// Answering is true while this node holds the pool's Lease and answers
	// ARP/NDP for its addresses.
	// +optional
	Answering bool `json:"answering,omitempty"`
	// Addresses is how many addresses of the pool this node answers for.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	Addresses int32 `json:"addresses,omitempty"`
	// Reason is Answering, Standby, or why this node cannot answer
	// (InterfaceUnavailable, OutsideSubnet, ResponderFailed...).
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// SpeakerProblem is something this speaker cannot do, with the Services it
// affects.
type SpeakerProblem struct {
	// Object the problem comes from ("BgpPeer/leaf1", "BgpConf/default",
	// "Eip/pool").
	Object string `json:"object"`
	// +optional
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
	// Services affected (namespace/name), the first few when there are many.
	// +optional
	// +listType=atomic
	Services []string `json:"services,omitempty"`
	// ServiceCount is how many Services are affected in all.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	ServiceCount int32 `json:"serviceCount,omitempty"`
}

// SpeakerDataPath is what this speaker's probes of the nodes' kube-proxy
// health checks found: the nodes it leaves out of its next hops.
type SpeakerDataPath struct {
	// Port probed on each node (kube-proxy's health check, /healthz).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// Probed is how many nodes are probed: the next hops of this node's
	// rack and the node itself.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	Probed int32 `json:"probed,omitempty"`
	// Unhealthy are the probed nodes whose check passed once and fails
	// now: left out of the next hops this speaker announces (and, for
	// this node itself, out of layer-2 answering).
	// +optional
	// +listType=map
	// +listMapKey=node
	Unhealthy []SpeakerUnhealthyNode `json:"unhealthy,omitempty"`
	// FailOpen is true when every next hop of the rack is unhealthy, so
	// none is left out (withdrawing the rack would only move its traffic
	// to racks that may be failing the same way).
	// +optional
	FailOpen bool `json:"failOpen,omitempty"`
}

// SpeakerUnhealthyNode is a node whose kube-proxy health check fails.
type SpeakerUnhealthyNode struct {
	Node string `json:"node"`
	// Message is the failure that made it unhealthy.
	// +optional
	Message string `json:"message,omitempty"`
	// Since it is unhealthy.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// LoadBalancerSpeakerStatus is one node's report, written by its speaker
// only when something in it changed.
type LoadBalancerSpeakerStatus struct {
	// Rack of the node.
	// +optional
	Rack string `json:"rack,omitempty"`
	// Announcing is true when this node's speaker sends BGP paths: BGP is
	// configured and the node is a speaker of its LoadBalancerRack.
	// +optional
	Announcing bool `json:"announcing,omitempty"`
	// AS and RouterID the speaker runs with.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	AS uint32 `json:"as,omitempty"`
	// +optional
	RouterID string `json:"routerID,omitempty"`
	// Prefixes is how many Service addresses are advertised, Paths how many
	// (address, next hop) paths.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	Prefixes int32 `json:"prefixes,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	Paths int32 `json:"paths,omitempty"`
	// SessionsEstablished out of len(sessions).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	SessionsEstablished int32 `json:"sessionsEstablished,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=peer
	Sessions []SpeakerSession `json:"sessions,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=pool
	Layer2 []SpeakerLayer2 `json:"layer2,omitempty"`
	// +optional
	// +listType=atomic
	Problems []SpeakerProblem `json:"problems,omitempty"`
	// DataPath is what the probes of the nodes' kube-proxy found; absent
	// when probing is off (--data-path-health-port=0).
	// +optional
	DataPath *SpeakerDataPath `json:"dataPath,omitempty"`
	// ObservedRackGeneration is the generation of the node's
	// LoadBalancerRack the advertised paths follow.
	// +kubebuilder:validation:Minimum=0
	// +optional
	ObservedRackGeneration int64 `json:"observedRackGeneration,omitempty"`
	// LastUpdate is when the speaker last changed this report.
	// +optional
	LastUpdate metav1.Time `json:"lastUpdate,omitempty"`
}

// LoadBalancerSpeaker is one node's speaker report (name: the node's; owned
// by the Node): its sessions, how many addresses and paths it advertises,
// its layer-2 pools, and the problems it has with the Services they affect.
// It replaces per-Service status entries, so a speaker's writes follow its
// own changes, not the number of Services. Each speaker writes only its own
// with server-side apply; speakers never watch each other's reports except
// for the layer-2 MACs (and only while a Local layer-2 Service needs them).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=lbspeaker,categories=networking
// +kubebuilder:printcolumn:name="Rack",type=string,JSONPath=`.status.rack`
// +kubebuilder:printcolumn:name="Announcing",type=boolean,JSONPath=`.status.announcing`
// +kubebuilder:printcolumn:name="Established",type=integer,JSONPath=`.status.sessionsEstablished`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.status.sessions[*].peer`
// +kubebuilder:printcolumn:name="Prefixes",type=integer,JSONPath=`.status.prefixes`
// +kubebuilder:printcolumn:name="Paths",type=integer,JSONPath=`.status.paths`
// +kubebuilder:printcolumn:name="Answering",type=string,JSONPath=`.status.layer2[?(@.answering==true)].pool`
// +kubebuilder:printcolumn:name="Unhealthy",type=string,JSONPath=`.status.dataPath.unhealthy[*].node`
// +kubebuilder:printcolumn:name="Updated",type=date,JSONPath=`.status.lastUpdate`
type LoadBalancerSpeaker struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status LoadBalancerSpeakerStatus `json:"status,omitempty"`
}

// LoadBalancerSpeakerList is a list of LoadBalancerSpeaker.
//
// +kubebuilder:object:root=true
type LoadBalancerSpeakerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LoadBalancerSpeaker `json:"items"`
}
