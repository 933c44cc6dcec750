// Package v1alpha2 holds the network.kubesphere.io/v1alpha2 API: OpenELB's Eip,
// BgpConf and BgpPeer, kept field-compatible so existing manifests apply
// unchanged, plus the resources this provider adds (LoadBalancerPlan, the
// per-Service contract between the CCM and the speakers, and IPClaim, the
// API-server-arbitrated record that an address is taken).
//
// +kubebuilder:object:generate=true
// +groupName=network.kubesphere.io
package v1alpha2
