// Package plugin is the kubectl openelb plugin (binary kubectl-openelb):
// `kubectl openelb status [SERVICE]` draws, per LoadBalancer Service, one
// tree joining what openelb spreads over several objects (the Service's
// LoadBalancerPlan, the LoadBalancerRacks, every node's
// LoadBalancerSpeaker, the speakers' layer-2 node Leases, the refusal
// events), and `kubectl openelb pools` lists the Eips with the Services
// holding their addresses.
//
// The node answering a layer-2 address is computed as the speakers compute
// it: the owner of the address (election.View.Owner) among the pool's
// candidates, the nodes whose live Lease lists the pool, provided that
// node's LoadBalancerSpeaker says it answers for the pool.
//
// It is split in three so that what is shown can be tested without an
// API server: fetch.go reads the objects into a StatusInput or a
// PoolsInput, status.go and pools.go render those as pure functions (no
// client, no clock: the input carries the time ages are measured from),
// and cli.go parses the command line and connects as kubectl does.
// Output is sorted everywhere (Services, racks, speakers, sessions,
// addresses), so the same objects always print the same text.
package plugin
