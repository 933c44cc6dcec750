package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EipSpec is an address pool. Field names and meanings follow OpenELB's
// v1alpha2 Eip so existing manifests apply unchanged.
//
// +kubebuilder:validation:XValidation:rule="!has(self.protocol) || self.protocol != 'layer2' || (has(self.interface) && size(self.interface) > 0)",message="spec.interface is required when spec.protocol is layer2"
type EipSpec struct {
	// Address is a single IP (192.168.0.10), a CIDR (192.168.0.0/24) or an
	// inclusive range (192.168.0.91-192.168.0.100), IPv4 or IPv6. A CIDR
	// contributes every address of the prefix.
	//
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:MaxLength=100
	// +kubebuilder:validation:XValidation:rule="isIP(self) || isCIDR(self) || (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()))",message="spec.address must be an IP address, a CIDR, or a range first-last"
	Address string `json:"address"`

	// Protocol announces the pool's addresses: bgp (default) or layer2.
	// vip is accepted for compatibility and reported unsupported.
	//
	// +kubebuilder:validation:Enum=bgp;layer2;vip
	// +optional
	Protocol string `json:"protocol,omitempty"`

	// Interface is, for layer2, the node interface to answer ARP/NDP on:
	// a name (eth0) or can_reach:<IP> for the interface that routes to IP.
	//
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Interface string `json:"interface,omitempty"`

	// Disable stops new allocations from this pool; addresses already
	// given to Services stay.
	//
	// +optional
	Disable bool `json:"disable,omitempty"`

	// UsingKnownIPs is accepted for OpenELB compatibility. It has no effect
	// here (addresses are never probed before use); the Eip carries a
	// condition saying so when it is set.
	//
	// +optional
	UsingKnownIPs bool `json:"usingKnownIPs,omitempty"`

	// Priority orders namespace-bound pools for automatic allocation: a
	// lower value is preferred (OpenELB semantics).
	//
	// +optional
	Priority int `json:"priority,omitempty"`

	// Namespaces whose Services may get addresses from this pool
	// automatically.
	//
	// +optional
	// +listType=set
	Namespaces []string `json:"namespaces,omitempty"`

	// NamespaceSelector binds namespaces by label: a namespace whose labels
	// contain every key/value here may use the pool automatically.
	//
	// +optional
	NamespaceSelector map[string]string `json:"namespaceSelector,omitempty"`
}

// EipStatus reports what the pool holds. It is written by the CCM leader.
type EipStatus struct {
	// Occupied is true when every address is in use.
	// +optional
	Occupied bool `json:"occupied,omitempty"`
	// Usage is the number of addresses in use.
	// +optional
	Usage int `json:"usage,omitempty"`
	// PoolSize is the number of addresses in the pool (saturates at the
	// largest int64 for huge IPv6 ranges).
	// +optional
	PoolSize int64 `json:"poolSize,omitempty"`
	// Used maps each address in use to its Services (namespace/name, comma
	// separated when shared). Capped at 1000 entries to keep the object
	// small; condition UsedTruncated says when the cap applies and IPClaim
	// objects always hold the full list.
	// +optional
	Used map[string]string `json:"used,omitempty"`
	// FirstIP is the first address of the pool.
	// +optional
	FirstIP string `json:"firstIP,omitempty"`
	// LastIP is the last address of the pool.
	// +optional
	LastIP string `json:"lastIP,omitempty"`
	// Ready is true when the pool is valid and serves allocations.
	// +optional
	Ready bool `json:"ready,omitempty"`
	// V4 is true for an IPv4 pool.
	// +optional
	V4 bool `json:"v4,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (valid and serving), plus Unsupported when a field
	// is accepted but has no effect, and UsedTruncated.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Eip is a pool of addresses for LoadBalancer Services.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:scope=Cluster,categories=networking
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.protocol`
// +kubebuilder:printcolumn:name="Usage",type=integer,JSONPath=`.status.usage`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.poolSize`
// +kubebuilder:printcolumn:name="Disabled",type=boolean,JSONPath=`.spec.disable`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=boolean,JSONPath=`.status.ready`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Eip struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EipSpec   `json:"spec,omitempty"`
	Status EipStatus `json:"status,omitempty"`
}

// EipList is a list of Eip.
//
// +kubebuilder:object:root=true
type EipList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Eip `json:"items"`
}

// IsDefault reports whether the Eip carries the default-pool annotation.
func (e *Eip) IsDefault() bool {
	return e.Annotations[AnnotationDefaultEip] == "true"
}

// EffectiveProtocol is the protocol the pool's addresses are announced
// with; an empty spec.protocol means bgp, as in OpenELB.
func (e *Eip) EffectiveProtocol() string {
	if e.Spec.Protocol == "" {
		return ProtocolBGP
	}
	return e.Spec.Protocol
}
