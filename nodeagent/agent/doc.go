// Package agent turns the cluster's view (this node, BgpConf, BgpPeers, the
// LoadBalancerPlans naming this node as a speaker) into what this node's
// speaker must do, and reconciles the speaker to it.
package agent
