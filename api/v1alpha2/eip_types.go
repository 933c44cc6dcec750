package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EipSpec is an address pool. Field names and meanings follow OpenELB's
// v1alpha2 Eip so existing manifests apply unchanged.
//
// +kubebuilder:validation:XValidation:rule="!has(self.protocol) || self.protocol != 'layer2' || (has(self.interface) && size(self.interface) > 0) || (has(self.layer2) && has(self.layer2.interfaces) && size(self.layer2.interfaces) > 0)",message="spec.interface or spec.layer2.interfaces is required when spec.protocol is layer2"
// +kubebuilder:validation:XValidation:rule="has(self.address) || (has(self.ranges) && size(self.ranges) > 0)",message="spec.address or spec.ranges is required"
type EipSpec struct {
	// Address is the pool's range: a single IP, a CIDR or first-last (see
	// AddressRange). Required unless Ranges is set; with both, the pool is
	// Address plus Ranges.
	//
	// +optional
	Address AddressRange `json:"address,omitempty"`

	// Ranges adds ranges to the pool, each written like Address, so a pool
	// can span addresses that no single CIDR or first-last range covers
	// (10.0.0.0/28 and 10.0.5.7-10.0.5.20). All ranges of a pool are of one
	// family (one Eip per family for dual stack) and none may overlap
	// another of the pool or of another Eip; adjacent ranges merge. The
	// CCM reports a breach as the Eip's Ready=False, reason InvalidAddress.
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Ranges []AddressRange `json:"ranges,omitempty"`

	// SkipNetworkAndBroadcast leaves out the first and the last address of
	// every CIDR in Address and Ranges: an IPv4 subnet's network and
	// broadcast addresses, which some client stacks refuse to send to,
	// and an IPv6 prefix's Subnet-Router anycast address and the top of
	// its reserved anycast block. Prefixes of one or two addresses (/31,
	// /32, /127, /128), single addresses and first-last ranges are kept
	// whole. Addresses Services already hold stay theirs when it is set.
	//
	// +optional
	SkipNetworkAndBroadcast bool `json:"skipNetworkAndBroadcast,omitempty"`

	// Protocol announces the pool's addresses: bgp (default) or layer2.
	// vip is accepted for compatibility and reported unsupported.
	//
	// +kubebuilder:validation:Enum=bgp;layer2;vip
	// +optional
	Protocol string `json:"protocol,omitempty"`

	// Interface is, for layer2, the node interface to answer ARP/NDP on:
	// a name (eth0), a pattern (eth*, see Layer2Interfaces) or
	// can_reach:<IP> for the interface that routes to IP. More can follow
	// in spec.layer2.interfaces.
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
	// lower value is preferred (OpenELB semantics); any 32-bit value,
	// negative ones included.
	//
	// +kubebuilder:validation:Minimum=-2147483648
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	Priority int `json:"priority,omitempty"`

	// Namespaces bound to this pool: their Services get addresses from it
	// automatically, and only Services of bound namespaces may use it at
	// all (by name, by address or by sharing an address) unless
	// AllowAnyNamespace is set. A pool with neither Namespaces nor
	// NamespaceSelector is bound to no namespace and open to every one by
	// name; a default pool is open to every namespace.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=63
	Namespaces []string `json:"namespaces,omitempty"`

	// NamespaceSelector binds namespaces by label: a namespace whose labels
	// contain every key/value here is bound to the pool (see Namespaces).
	//
	// +optional
	NamespaceSelector map[string]string `json:"namespaceSelector,omitempty"`

	// AllowAnyNamespace lets Services of namespaces not bound to this pool
	// request it by name (annotation eip.openelb.kubesphere.io/v1alpha2) or
	// by address: OpenELB's behaviour, where namespaces and
	// namespaceSelector only chose the pool for automatic allocation.
	// Automatic allocation still serves bound namespaces only. Off by
	// default, so a bound pool belongs to its namespaces.
	//
	// +optional
	AllowAnyNamespace bool `json:"allowAnyNamespace,omitempty"`

	// ServiceSelector limits the pool to Services whose labels match,
	// alongside Namespaces, NamespaceSelector and Priority: a Service that
	// does not match never gets an address from it, whether it asks
	// automatically, names the pool, requests one of its addresses or
	// shares one. Automatic allocation skips the pool for such a Service
	// and falls through to the next candidate. A Service keeps an address
	// it holds when its labels change. Unset: every Service.
	//
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`

	// Layer2 chooses, for a layer2 pool, which nodes may answer for its
	// addresses. Reported Unsupported on a bgp pool (use
	// spec.bgp.nodeSelector there).
	//
	// +optional
	Layer2 *EipLayer2 `json:"layer2,omitempty"`

	// BGP sets the path attributes (communities, large communities, local
	// preference, AS-path prepend) the pool's addresses are announced
	// with; a Service overrides each by annotation. Ignored for layer2
	// pools (the Eip's Unsupported condition says so).
	//
	// +optional
	BGP *EipBGP `json:"bgp,omitempty"`
}

// EipLayer2 is how a layer2 pool is answered.
type EipLayer2 struct {
	// NodeSelector limits the nodes that may answer ARP/NDP for the
	// pool's addresses to those whose labels match (on top of the speaker
	// label). A node left out does not compete, and reports the pool with
	// reason NodeNotSelected in its LoadBalancerSpeaker status (not a
	// problem). Unset: every speaker node. A selector the API server
	// stores but that is not valid keeps the Eip out of allocation
	// (Ready=False, reason InvalidNodeSelector) and every node out of the
	// pool.
	//
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Interfaces are more interfaces to answer on, tried after
	// spec.interface, in order, on each node: a name (eth1), a shell
	// pattern matched against the node's interface names in name order
	// (ens*, bond[0-9]), or can_reach:<IP>. A node answers on the first
	// one that is up and carries the subnet of the pool's addresses, so
	// nodes whose NICs are named differently share one Eip. A Service
	// picks its own with the annotation
	// openelb.kubesphere.io/layer2-interface (same syntax,
	// comma-separated).
	//
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=64
	// +listType=atomic
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`

	// PreferredNodeSelector picks, among the nodes that may answer, the
	// ones that answer while any of them can: the pool's addresses spread
	// over the preferred candidates only, and move to the other nodes
	// when no preferred node is left (dead, interface down, not
	// selected), and back when one returns. Unset: all candidates share
	// the addresses. Invalid: the Eip is kept out of allocation
	// (Ready=False, reason InvalidNodeSelector).
	//
	// +optional
	PreferredNodeSelector *metav1.LabelSelector `json:"preferredNodeSelector,omitempty"`
}

// EipStatus reports what the pool holds. It is written by the CCM leader.
type EipStatus struct {
	// Occupied is true when every address is in use.
	// +optional
	Occupied bool `json:"occupied,omitempty"`
	// Usage is the number of addresses in use.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Usage int `json:"usage,omitempty"`
	// PoolSize is the number of addresses in the pool (saturates at the
	// largest int64 for huge IPv6 ranges).
	// +kubebuilder:validation:Minimum=0
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
	// +kubebuilder:validation:Minimum=0
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (valid and serving), plus Unsupported when a field
	// is accepted but has no effect, and UsedTruncated.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AddressRange is a single IP (192.168.0.10), a CIDR (192.168.0.0/24) or an
// inclusive range (192.168.0.91-192.168.0.100), IPv4 or IPv6. A CIDR
// contributes every address of the prefix. IPv4-mapped IPv6 addresses
// (::ffff:0:0/96) may not be part of the pool, and a range may not end
// before it starts.
//
// The rules accept exactly what the allocator parses (ipam.ParseRange;
// FuzzEipAddressRule compares them): spaces around the value and
// around a range's '-' or a CIDR's '/' are allowed. CEL can neither
// compare addresses nor write an IPv4-mapped one, hence the detours: a
// range's ends are ordered by walking the bits of the first with
// cidr().containsIP (the first bit where the ends differ must be 0 in
// the first; the prefix lengths are a list of literals because the
// API server's cost estimate cannot bound string(int), nor comparisons
// of masked()); a CIDR covers ::ffff:0:0/96 when it is a /95 or shorter
// holding ::fffe:0:0 (then it holds the whole /95, that block
// included); a range does when its first address lies in ::/80 (the
// block is that /80's top) and its last beyond it.
//
// +kubebuilder:validation:MaxLength=100
// +kubebuilder:validation:XValidation:rule="isIP(self.trim()) || (self.split('/').size() == 2 && isCIDR(self.split('/')[0].trim() + '/' + self.split('/')[1].trim()) && !(cidr(self.split('/')[0].trim() + '/' + self.split('/')[1].trim()).prefixLength() <= 95 && cidr(self.split('/')[0].trim() + '/' + self.split('/')[1].trim()).containsIP('::fffe:0:0'))) || (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()) && ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family() && !(cidr('::/80').containsIP(self.split('-')[0].trim()) && !cidr('::/80').containsIP(self.split('-')[1].trim())))",message="must be an IP address, a CIDR, or a range first-last of one family, without IPv4-mapped IPv6 addresses"
// +kubebuilder:validation:XValidation:rule="!(self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()) && ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family() && ['0/1', '1/2', '2/3', '3/4', '4/5', '5/6', '6/7', '7/8', '8/9', '9/10', '10/11', '11/12', '12/13', '13/14', '14/15', '15/16', '16/17', '17/18', '18/19', '19/20', '20/21', '21/22', '22/23', '23/24', '24/25', '25/26', '26/27', '27/28', '28/29', '29/30', '30/31', '31/32', '32/33', '33/34', '34/35', '35/36', '36/37', '37/38', '38/39', '39/40', '40/41', '41/42', '42/43', '43/44', '44/45', '45/46', '46/47', '47/48', '48/49', '49/50', '50/51', '51/52', '52/53', '53/54', '54/55', '55/56', '56/57', '57/58', '58/59', '59/60', '60/61', '61/62', '62/63', '63/64', '64/65', '65/66', '66/67', '67/68', '68/69', '69/70', '70/71', '71/72', '72/73', '73/74', '74/75', '75/76', '76/77', '77/78', '78/79', '79/80', '80/81', '81/82', '82/83', '83/84', '84/85', '85/86', '86/87', '87/88', '88/89', '89/90', '90/91', '91/92', '92/93', '93/94', '94/95', '95/96', '96/97', '97/98', '98/99', '99/100', '100/101', '101/102', '102/103', '103/104', '104/105', '105/106', '106/107', '107/108', '108/109', '109/110', '110/111', '111/112', '112/113', '113/114', '114/115', '115/116', '116/117', '117/118', '118/119', '119/120', '120/121', '121/122', '122/123', '123/124', '124/125', '125/126', '126/127', '127/128'].exists(n, int(n.split('/')[0]) < (ip(self.split('-')[0].trim()).family() == 4 ? 32 : 128) && cidr(self.split('-')[0].trim() + '/' + n.split('/')[0]).containsIP(self.split('-')[1].trim()) && !cidr(self.split('-')[0].trim() + '/' + n.split('/')[1]).containsIP(self.split('-')[1].trim()) && !cidr(self.split('-')[0].trim() + '/' + n.split('/')[1]).containsIP(cidr(self.split('-')[0].trim() + '/' + n.split('/')[0]).masked().ip())))",message="a range's last address must not be before its first"
type AddressRange string

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
// Layer2Interfaces is the interface list a layer2 pool is answered on:
// spec.interface, then spec.layer2.interfaces.
func (e *Eip) Layer2Interfaces() []string {
	var out []string
	if e.Spec.Interface != "" {
		out = append(out, e.Spec.Interface)
	}
	if e.Spec.Layer2 != nil {
		out = append(out, e.Spec.Layer2.Interfaces...)
	}
	return out
}

func (e *Eip) EffectiveProtocol() string {
	if e.Spec.Protocol == "" {
		return ProtocolBGP
	}
	return e.Spec.Protocol
}
