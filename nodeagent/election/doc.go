// Package election elects, per layer-2 pool, the one node that answers
// ARP/NDP for the pool's addresses.
//
// Each pool has one Lease in the speakers' namespace, named by LeaseName
// (openelb-layer2-<pool>); its holder is the answering node's name. A
// speaker campaigns for a pool's Lease (Campaign) only while it could
// answer there: the caller decides that (its node is a speaker node, the
// pool has an address in use, the pool's interface carries the addresses'
// subnet, a responder runs on it) and stops the campaign as soon as it no
// longer holds. The election itself is client-go's leader elector, driven
// through a resource lock of this package.
//
// Timings (LeaseTimings, DefaultLeaseTimings 2s / 1.5s / 500ms): the leader
// renews every RetryPeriod; a leader that cannot renew gives up after
// RenewDeadline, strictly before the Lease expires for the others after
// Duration (Validate enforces it), so two nodes never answer at once. A
// dead leader is replaced about Duration after its last renewal.
//
// A leader always stops answering before the Lease can go to another node:
// Leadership.Ended runs, and must return only once the node has stopped
// answering, before a release is written and whenever the term ends
// (renewal deadline passed, Lease taken). When the campaign's context ends
// (SIGTERM: a rolling update, a drained node) the leader releases the
// Lease, so a standby takes over within one API round trip and one watch
// event instead of waiting for the Lease to expire.
//
// Candidates do not poll the API server. The Store reads Leases from the
// agent's watch cache and says when one changes (CachedLeases); the lock's
// Get blocks until the Lease changes or would expire, so a release is seen
// within one watch event and an expiry within tens of milliseconds, and the
// only API traffic is the leader's renewals and the takeover writes.
package election
