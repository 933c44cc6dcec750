package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Numeric bounds. Every uint32 field of this package is published with
// Format=int64 (controller-gen says int32, which makes the API server
// refuse 4-byte AS numbers above 2147483647) and Minimum/Maximum matching
// what the field carries on the wire or in GoBGP: the API server refuses
// what the speaker could not use, and a negative number, which a Go client
// cannot decode into a uint32 (every LIST of the kind would fail), never
// gets stored. 0 stays valid wherever it means "default" or "unset" (an
// omitted field decodes as 0 anyway). Status fields are bounded too: a
// client must be able to list what the speakers wrote. int32 counters
// carry an explicit Maximum as well: the API server's int32 format check
// alone refuses an overflow without naming the field.

// GracefulRestart mirrors OpenELB's (and GoBGP's) graceful-restart settings.
type GracefulRestart struct {
	Enabled bool `json:"enabled,omitempty"`
	// RestartTime in seconds, a 12-bit field of the capability (RFC 4724);
	// 0 means 120.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4095
	// +optional
	RestartTime uint32 `json:"restartTime,omitempty"`
	HelperOnly  bool   `json:"helperOnly,omitempty"`
	// DeferralTime in seconds (16 bits in GoBGP); accepted for OpenELB
	// compatibility.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	DeferralTime        uint32 `json:"deferralTime,omitempty"`
	NotificationEnabled bool   `json:"notificationEnabled,omitempty"`
	LonglivedEnabled    bool   `json:"longlivedEnabled,omitempty"`
	// StaleRoutesTime in seconds, a 24-bit field of the long-lived
	// graceful-restart capability (RFC 9494); accepted for OpenELB
	// compatibility.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16777215
	// +optional
	StaleRoutesTime uint32 `json:"staleRoutesTime,omitempty"`
	// PeerRestartTime is the router's restart time (12 bits); accepted for
	// OpenELB compatibility.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4095
	// +optional
	PeerRestartTime uint32 `json:"peerRestartTime,omitempty"`
	PeerRestarting  bool   `json:"peerRestarting,omitempty"`
	LocalRestarting bool   `json:"localRestarting,omitempty"`
	Mode            string `json:"mode,omitempty"`
}

// ASN is the type of asPerRack's values only: controller-gen takes the
// schema of a map's values from their type alone (an alias of uint32 would
// still be published as int32). The other AS fields stay uint32, with the
// same markers.

// ASN is an AS number, 2- or 4-byte (RFC 6793).
//
// +kubebuilder:validation:Format=int64
// +kubebuilder:validation:Minimum=0
// +kubebuilder:validation:Maximum=4294967295
type ASN uint32

// BgpConfSpec is the speakers' global BGP configuration. Only the object
// named "default" is used.
type BgpConfSpec struct {
	// As is the speakers' AS number (2- or 4-byte); 0 or unset: only the
	// racks of AsPerRack speak BGP.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	As uint32 `json:"as,omitempty"`
	// AsPerRack overrides As for the speakers of a rack (node label
	// openelb.kubesphere.io/rack).
	// +optional
	AsPerRack map[string]ASN `json:"asPerRack,omitempty"`
	// RouterId defaults to the node's InternalIP.
	// +optional
	RouterId string `json:"routerId,omitempty"`
	// ListenPort for incoming sessions; 0 or unset: do not listen.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	ListenPort int32 `json:"listenPort,omitempty"`
	// ListenAddresses restricts the listener.
	// +optional
	ListenAddresses []string `json:"listenAddresses,omitempty"`
	// Families is accepted for OpenELB compatibility (GoBGP route
	// families, AFI<<16 | SAFI).
	// +kubebuilder:validation:items:Format=int64
	// +kubebuilder:validation:items:Minimum=0
	// +kubebuilder:validation:items:Maximum=4294967295
	// +optional
	Families []uint32 `json:"families,omitempty"`
	// UseMultiplePaths is accepted for OpenELB compatibility.
	// +optional
	UseMultiplePaths bool `json:"useMultiplePaths,omitempty"`
	// GracefulRestart of the speakers.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`
	// Policy is accepted for OpenELB compatibility.
	// +optional
	Policy string `json:"policy,omitempty"`
	// GracefulShutdown, when enabled, drains a node gently (RFC 8326):
	// when it is cordoned, tainted ToBeDeletedByClusterAutoscaler or with
	// one of Taints, its next hops stay announced for DelaySeconds with the
	// graceful-shutdown community (and LOCAL_PREF 0 toward iBGP peers), so
	// routers move the traffic to the other next hops while the node
	// still forwards, and are withdrawn only then. Off: a draining node's
	// next hops are withdrawn at once.
	// +optional
	GracefulShutdown *GracefulShutdown `json:"gracefulShutdown,omitempty"`
}

// GracefulShutdown is BgpConfSpec.GracefulShutdown.
type GracefulShutdown struct {
	Enabled bool `json:"enabled,omitempty"`
	// DelaySeconds a draining node's next hops stay announced with the
	// graceful-shutdown community before they are withdrawn; 0 means 30.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	DelaySeconds int32 `json:"delaySeconds,omitempty"`
	// Taints (keys) that start a drain too, e.g. the one a node-shutdown
	// controller sets.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=317
	Taints []string `json:"taints,omitempty"`
}

// DefaultGracefulShutdownDelay is GracefulShutdown.DelaySeconds when 0.
const DefaultGracefulShutdownDelay = 30

// NodeConfStatus is what one speaker applied.
type NodeConfStatus struct {
	RouterId string `json:"routerId,omitempty"`
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	As uint32 `json:"as,omitempty"`
}

// BgpConfStatus reports, per node, what each speaker applied.
type BgpConfStatus struct {
	// NodesConfStatus is keyed by node name; each speaker writes only its
	// own key.
	// +optional
	NodesConfStatus map[string]NodeConfStatus `json:"nodesConfStatus,omitempty"`
	// Conditions, written by the CCM: Unsupported when a field is set that
	// the speakers do not carry out (its message names each, and why).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BgpConf is the global BGP configuration of the speakers.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:scope=Cluster,categories=networking
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.as`
// +kubebuilder:printcolumn:name="ListenPort",type=integer,JSONPath=`.spec.listenPort`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BgpConf struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BgpConfSpec   `json:"spec,omitempty"`
	Status BgpConfStatus `json:"status,omitempty"`
}

// BgpConfList is a list of BgpConf.
//
// +kubebuilder:object:root=true
type BgpConfList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BgpConf `json:"items"`
}

// SecretKeyRef points at one key of a Secret in the BgpPeer password
// namespace (the speakers' --bgp-secrets-namespace, openelb-bgp-secrets).
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Key in the Secret's data; default "password".
	// +optional
	Key string `json:"key,omitempty"`
}

// PeerConf is the neighbor's configuration (OpenELB field names).
type PeerConf struct {
	// AuthPassword is the TCP MD5 password in clear text, kept for OpenELB
	// compatibility; prefer AuthPasswordSecretRef.
	// +optional
	AuthPassword string `json:"authPassword,omitempty"`
	// AuthPasswordSecretRef reads the password from a Secret in
	// openelb-bgp-secrets (the speakers' --bgp-secrets-namespace; never
	// openelb-system), so no password sits in the CR.
	// +optional
	AuthPasswordSecretRef *SecretKeyRef `json:"authPasswordSecretRef,omitempty"`
	Description           string        `json:"description,omitempty"`
	// LocalAs is accepted for OpenELB compatibility; the session uses the
	// BgpConf's AS.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	LocalAs uint32 `json:"localAs,omitempty"`
	// NeighborAddress is the router's address.
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="neighborAddress must be an IP address"
	NeighborAddress string `json:"neighborAddress,omitempty"`
	// PeerAs is the router's AS number (2- or 4-byte; required, 0 is
	// reported as a problem by the speakers).
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	PeerAs    uint32 `json:"peerAs,omitempty"`
	PeerGroup string `json:"peerGroup,omitempty"`
	// PeerType is accepted for OpenELB compatibility: 0 internal, 1
	// external (GoBGP v3's numbering, which OpenELB uses).
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	// +optional
	PeerType         uint32 `json:"peerType,omitempty"`
	RemovePrivateAs  string `json:"removePrivateAs,omitempty"`
	RouteFlapDamping bool   `json:"routeFlapDamping,omitempty"`
	// SendCommunity is accepted for OpenELB compatibility: 0 standard, 1
	// extended, 2 both, 3 none (GoBGP's community types).
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3
	// +optional
	SendCommunity     uint32 `json:"sendCommunity,omitempty"`
	NeighborInterface string `json:"neighborInterface,omitempty"`
	Vrf               string `json:"vrf,omitempty"`
	// AllowOwnAs is accepted for OpenELB compatibility: how many times
	// the own AS may appear in a received path (8 bits in GoBGP).
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	AllowOwnAs    uint32 `json:"allowOwnAs,omitempty"`
	ReplacePeerAs bool   `json:"replacePeerAs,omitempty"`
	AdminDown     bool   `json:"adminDown,omitempty"`
}

// TimersConfig holds BGP timers in seconds, as strings (OpenELB's shape).
type TimersConfig struct {
	ConnectRetry                 string `json:"connectRetry,omitempty"`
	HoldTime                     string `json:"holdTime,omitempty"`
	KeepaliveInterval            string `json:"keepaliveInterval,omitempty"`
	MinimumAdvertisementInterval string `json:"minimumAdvertisementInterval,omitempty"`
}

// Timers wraps TimersConfig.
type Timers struct {
	Config *TimersConfig `json:"config,omitempty"`
}

// Transport settings of the session.
type Transport struct {
	MtuDiscovery  bool   `json:"mtuDiscovery,omitempty"`
	PassiveMode   bool   `json:"passiveMode,omitempty"`
	RemoteAddress string `json:"remoteAddress,omitempty"`
	// RemotePort is the router's TCP port; 0 means 179.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	RemotePort uint32 `json:"remotePort,omitempty"`
	// TcpMss is accepted for OpenELB compatibility (a 16-bit TCP option;
	// 0 means the system's).
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	TcpMss uint32 `json:"tcpMss,omitempty"`
}

// EbgpMultihop allows eBGP sessions to non-adjacent routers.
type EbgpMultihop struct {
	Enabled bool `json:"enabled,omitempty"`
	// MultihopTtl is the IP TTL of the session's packets; 0 means 255.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	MultihopTtl uint32 `json:"multihopTtl,omitempty"`
}

// MpGracefulRestartConfig enables graceful restart for one family.
type MpGracefulRestartConfig struct {
	Enabled bool `json:"enabled,omitempty"`
}

// MpGracefulRestart wraps MpGracefulRestartConfig.
type MpGracefulRestart struct {
	Config *MpGracefulRestartConfig `json:"config,omitempty"`
}

// Family is an AFI/SAFI pair, e.g. ipv4/unicast.
type Family struct {
	Afi  string `json:"afi,omitempty"`
	Safi string `json:"safi,omitempty"`
}

// AfiSafiConfig enables one family.
type AfiSafiConfig struct {
	Family  *Family `json:"family,omitempty"`
	Enabled bool    `json:"enabled,omitempty"`
}

// AddPathsConfig configures ADD-PATH (RFC 7911) for one family.
type AddPathsConfig struct {
	Receive bool `json:"receive,omitempty"`
	// SendMax is how many paths per prefix are sent (8 bits in GoBGP); 0
	// means 255.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	SendMax uint32 `json:"sendMax,omitempty"`
}

// AddPaths wraps AddPathsConfig.
type AddPaths struct {
	Config *AddPathsConfig `json:"config,omitempty"`
}

// AfiSafi is the per-family configuration of a session.
type AfiSafi struct {
	MpGracefulRestart *MpGracefulRestart `json:"mpGracefulRestart,omitempty"`
	Config            *AfiSafiConfig     `json:"config,omitempty"`
	AddPaths          *AddPaths          `json:"addPaths,omitempty"`
}

// Bfd enables Bidirectional Forwarding Detection on the session.
type Bfd struct {
	Enabled bool `json:"enabled,omitempty"`
	// DetectMultiplier: missed packets before the session is declared down
	// (8 bits on the wire); 0 means 3.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	DetectMultiplier uint32 `json:"detectMultiplier,omitempty"`
	// DesiredMinTxIntervalMs between BFD packets sent; 0 means 1000. The
	// wire carries microseconds in 32 bits, hence at most 4294967.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967
	// +optional
	DesiredMinTxIntervalMs uint32 `json:"desiredMinTxIntervalMs,omitempty"`
	// RequiredMinRxIntervalMs between BFD packets received; 0 means 1000,
	// at most 4294967 like DesiredMinTxIntervalMs.
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967
	// +optional
	RequiredMinRxIntervalMs uint32 `json:"requiredMinRxIntervalMs,omitempty"`
}

// BgpPeerSpec is a BGP neighbor of the speakers its NodeSelector matches.
type BgpPeerSpec struct {
	Conf            *PeerConf        `json:"conf,omitempty"`
	EbgpMultihop    *EbgpMultihop    `json:"ebgpMultihop,omitempty"`
	Timers          *Timers          `json:"timers,omitempty"`
	Transport       *Transport       `json:"transport,omitempty"`
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`
	AfiSafis        []*AfiSafi       `json:"afiSafis,omitempty"`
	// Bfd on the session.
	// +optional
	Bfd *Bfd `json:"bfd,omitempty"`
	// NodeSelector picks the speakers that peer with this neighbor; unset
	// means every speaker (seed 000 uses one peer per rack).
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

// PeerState is one speaker's view of the session (OpenELB's shape plus
// what this speaker adds).
type PeerState struct {
	NeighborAddress string `json:"neighborAddress,omitempty"`
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	PeerAs uint32 `json:"peerAs,omitempty"`
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	LocalAs      uint32 `json:"localAs,omitempty"`
	SessionState string `json:"sessionState,omitempty"`
	AdminState   string `json:"adminState,omitempty"`
	RouterId     string `json:"routerId,omitempty"`
	// AddPathNegotiated is true when the router accepted ADD-PATH, so each
	// next hop is sent as its own path; false means this speaker advertises
	// itself as the only next hop.
	AddPathNegotiated bool `json:"addPathNegotiated,omitempty"`
	// NextHopSelf is true when the router did not negotiate ADD-PATH: this
	// speaker then sends one path per address with itself as next hop, so
	// the router reaches the rack's nodes through this one.
	// +optional
	NextHopSelf bool `json:"nextHopSelf,omitempty"`
	// AdvertisedPaths is the number of paths sent to this neighbor.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	AdvertisedPaths int32 `json:"advertisedPaths,omitempty"`
	// BfdState is the BFD session state (up, down, init, admin-down);
	// empty when BFD is off.
	// +optional
	BfdState string `json:"bfdState,omitempty"`
	// LastTransitionTime is when this speaker saw sessionState change.
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
	// Message explains a failure (bad password Secret, no AS...).
	Message string `json:"message,omitempty"`
}

// TimersState is the negotiated timers of the session.
type TimersState struct {
	ConnectRetry       string `json:"connectRetry,omitempty"`
	HoldTime           string `json:"holdTime,omitempty"`
	KeepaliveInterval  string `json:"keepaliveInterval,omitempty"`
	NegotiatedHoldTime string `json:"negotiatedHoldTime,omitempty"`
	// Uptime and Downtime are kept for OpenELB compatibility but not
	// written: a value that changes every second would cost a status write
	// per interval per node. peerState.lastTransitionTime says since when.
	Uptime   string `json:"uptime,omitempty"`
	Downtime string `json:"downtime,omitempty"`
}

// NodePeerStatus is one speaker's report on one BgpPeer.
type NodePeerStatus struct {
	PeerState   PeerState   `json:"peerState,omitempty"`
	TimersState TimersState `json:"timersState,omitempty"`
}

// BgpPeerStatus is written by the speakers, each under its own node key
// (server-side apply, so speakers never conflict).
type BgpPeerStatus struct {
	// +optional
	NodesPeerStatus map[string]NodePeerStatus `json:"nodesPeerStatus,omitempty"`
	// Conditions, written by the CCM: Unsupported when a field is set that
	// the speakers do not carry out (its message names each, and why).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BgpPeer is a BGP neighbor (a leaf router) of the speakers.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:scope=Cluster,categories=networking
// +kubebuilder:printcolumn:name="Neighbor",type=string,JSONPath=`.spec.conf.neighborAddress`
// +kubebuilder:printcolumn:name="PeerAS",type=integer,JSONPath=`.spec.conf.peerAs`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BgpPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BgpPeerSpec   `json:"spec,omitempty"`
	Status BgpPeerStatus `json:"status,omitempty"`
}

// BgpPeerList is a list of BgpPeer.
//
// +kubebuilder:object:root=true
type BgpPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BgpPeer `json:"items"`
}
