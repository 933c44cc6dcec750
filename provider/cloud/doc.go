// Package cloud is the cloudprovider.Interface named "openelb": a
// LoadBalancer that gives Services addresses from Eip pools (with the API
// server as the arbiter of who holds an address), writes each Service's
// LoadBalancerPlan and one LoadBalancerRack per rack (who announces, to
// which routers, with which next hops), and a minimal InstancesV2 for
// bare-metal nodes.
package cloud
