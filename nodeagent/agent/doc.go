// Package agent turns the cluster's view (this node, BgpConf, BgpPeers, Eips,
// the LoadBalancerPlans naming this node) into what this node's speaker must
// do, and reconciles it: BGP advertisements through the bgp package, and for
// layer-2 pools a Lease election per pool whose winner answers ARP/NDP
// through the layer2 package. It reports per node into BgpPeer and plan
// statuses, writing only what changed.
package agent
