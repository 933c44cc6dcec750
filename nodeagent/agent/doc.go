// Package agent turns the cluster's view (this node, its rack's
// LoadBalancerRack, BgpConf, BgpPeers, Eips, the LoadBalancerPlans) into
// what this node's speaker must do, and reconciles it: BGP advertisements
// through the bgp package, and for layer-2 pools a Lease election per pool
// (the election package) whose winner answers ARP/NDP through the layer2
// package. It reports into its node's entry of the BgpPeer statuses and
// into its node's LoadBalancerSpeaker, writing only what changed; it never
// writes plans, so its API cost does not grow with the number of Services.
package agent
