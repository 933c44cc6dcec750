package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPAttributes are the optional path attributes a BGP address is announced
// with. On an Eip (spec.bgp) they apply to every address of the pool; a
// Service overrides each of them by annotation (AnnotationBGPCommunities
// and the others below); the LoadBalancerPlan shows, per address, what the
// speakers announce.
//
// The schema checks the shape and ranges; ParseCommunity and
// ParseLargeCommunity are the same rules in Go, used by the CCM on the
// annotations and by the speakers on what they read.
type BGPAttributes struct {
	// Communities are standard communities (RFC 1997): "AS:value" with
	// both parts 0..65535, or a well-known name: no-export, no-advertise,
	// no-export-subconfed (alias local-as), no-peer, blackhole,
	// graceful-shutdown, accept-own, llgr-stale, no-llgr.
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.all(c, c.matches('^[0-9]{1,5}:[0-9]{1,5}$') ? (int(c.split(':')[0]) <= 65535 && int(c.split(':')[1]) <= 65535) : c in ['no-export', 'no-advertise', 'no-export-subconfed', 'local-as', 'no-peer', 'blackhole', 'graceful-shutdown', 'accept-own', 'llgr-stale', 'no-llgr'])",message="communities: each must be AS:value (0..65535 each) or a well-known name (no-export, no-advertise, no-export-subconfed, local-as, no-peer, blackhole, graceful-shutdown, accept-own, llgr-stale, no-llgr)"
	Communities []string `json:"communities,omitempty"`

	// LargeCommunities are large communities (RFC 8092):
	// "global:local1:local2", each part 0..4294967295. Global
	// administrator 4294967295 is reserved (the speakers use it internally
	// and strip it from what they send).
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.all(c, c.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && int(c.split(':')[0]) < 4294967295 && int(c.split(':')[1]) <= 4294967295 && int(c.split(':')[2]) <= 4294967295)",message="largeCommunities: each must be global:local1:local2, each part 0..4294967295 (global 4294967295 is reserved)"
	LargeCommunities []string `json:"largeCommunities,omitempty"`

	// LocalPref is the LOCAL_PREF sent to iBGP peers (routers of the
	// speaker's own AS); eBGP peers never receive it (RFC 4271). Unset: no
	// LOCAL_PREF is set (an iBGP router then assumes 100).
	//
	// +optional
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	LocalPref *int64 `json:"localPref,omitempty"`

	// ASPathPrepend is how many extra times the speaker prepends its own
	// AS toward eBGP peers (0..10), making the path look longer so that
	// routers prefer other paths. iBGP peers receive no AS path (their
	// routers would see their own AS in it and drop the route).
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	ASPathPrepend int32 `json:"asPathPrepend,omitempty"`

	// ASPathPrependPeers overrides ASPathPrepend toward some eBGP peers,
	// by BgpPeer name: {leaf2: 3} prepends three times toward leaf2 and
	// ASPathPrepend times toward the others (0 here: none toward that
	// peer).
	//
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, self[k] >= 0 && self[k] <= 10)",message="asPathPrependPeers: each count must be 0..10"
	ASPathPrependPeers map[string]int32 `json:"asPathPrependPeers,omitempty"`

	// PeerSelector limits which BgpPeers receive the addresses: those
	// whose labels match. Unset: every BgpPeer of the announcing
	// speakers.
	//
	// +optional
	PeerSelector *metav1.LabelSelector `json:"peerSelector,omitempty"`

	// NodeSelector limits which nodes carry the addresses' traffic: only
	// next hops whose node labels match are announced (the speakers of a
	// rack announce on behalf of its nodes, so a rack with no matching
	// node does not announce the addresses at all, and that is not a
	// problem). Unset: every eligible node.
	//
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// LinkBandwidthMbps turns on weighted ECMP across racks: each path
	// carries the BGP link-bandwidth extended community (transitive,
	// draft-ietf-idr-link-bandwidth) with this many Mbit/s per node the
	// rack sends the address's traffic to (its next hops: every eligible
	// node, or for externalTrafficPolicy Local the endpoints' nodes). A
	// rack of two such nodes announces twice the bandwidth of a rack of
	// one, its leaf passes the value on unchanged, and a router that
	// honours it (FRR by default) splits traffic 2:1 between the leaves,
	// so every node gets an equal share. Use the nodes' link speed (e.g.
	// 25000), or any value if only the ratio matters. 0 or unset: no
	// link-bandwidth community (plain ECMP: equal per rack).
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	LinkBandwidthMbps int32 `json:"linkBandwidthMbps,omitempty"`
}

// MaxLinkBandwidthMbps bounds BGPAttributes.LinkBandwidthMbps (1 Tbit/s
// per node).
const MaxLinkBandwidthMbps = 1000000

// MaxASPathPrepend bounds BGPAttributes.ASPathPrepend.
const MaxASPathPrepend = 10

// EipBGP is how a BGP pool's addresses are announced.
type EipBGP struct {
	BGPAttributes `json:",inline"`

	// AggregationLength, for an IPv4 pool, announces the covering prefix
	// of this length of each address in use (172.22.0.0/24 for 24)
	// instead of the address itself (/32, the default; 0 means 32). The
	// prefix is announced while any Service with externalTrafficPolicy
	// Cluster holds an address in it, with the rack's next hops; Local
	// Services keep their own /32 (their next hops are their endpoints'
	// nodes, which an aggregate shared by several Services cannot carry).
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	AggregationLength int32 `json:"aggregationLength,omitempty"`

	// AggregationLengthV6 is AggregationLength for an IPv6 pool (0 means
	// 128).
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	AggregationLengthV6 int32 `json:"aggregationLengthV6,omitempty"`
}
