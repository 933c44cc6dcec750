// Package election decides, per layer-2 address, the one node that
// answers ARP/NDP for it, so that the addresses of a pool spread over its
// nodes, at an API cost that depends on the number of nodes only.
//
// # One Lease per node
//
// Each speaker that can answer for some layer-2 pool keeps one Lease in
// the speakers' namespace, NodeLeaseName(node) ("openelb-layer2-node-<node>",
// holder: the node, owner: the Node object), renewed every RetryPeriod
// (OwnLease). Its annotation AnnotationPools lists the pools the node can
// answer for (it is up on the pool's interface, which carries the
// addresses' subnet, and its responder runs), each with the view the node
// acts on (Membership). Nothing is written per address: 1,000 addresses on
// 3 nodes cost 3 renewals per RetryPeriod, like 1 address.
//
// # Views and owners
//
// A node's view of a pool is the set of live nodes whose Lease lists the
// pool, itself included (View). The owner of an address is a rendezvous
// hash of pool, address and node over the view (package spread), limited
// to the preferred candidates while there are any: nodes that see the
// same view agree on every owner, and a node joining or leaving moves
// only its share of the addresses.
//
// A node is live, in another node's eyes, until Duration after that node
// saw its last Lease write (timed by the observer's clock, not the
// Lease's timestamps), and then only once a read from the API server
// confirms that nothing was written since (Peers). A node that writes its
// Lease without pools (SIGTERM, interface down) is no candidate at once; a
// deleted Lease is treated as one not renewed (the node may be about to
// create it again).
//
// # Hand-overs: never two answering nodes
//
//   - A node stops answering what it no longer owns as soon as its own view
//     changes, and only then writes the new view into its Lease (an
//     acknowledgement).
//   - It starts answering an address it owns only once every other
//     candidate of its view has acknowledged the same view in a Lease
//     write later than its own first write of that view (Ready; Lease
//     resourceVersions are comparable, so "later" is the API server's
//     order, not a clock). A node that sees another switch to its own view
//     after its last write renews at once, so a hand-over costs a few API
//     round trips, not a renewal period.
//   - A node whose renewals fail stops answering everything RenewDeadline
//     after it sent its last successful write, strictly before the others
//     may consider it gone (Duration after they saw that write), and
//     starts every hand-over afresh when its writes succeed again.
//
// Timings (LeaseTimings, DefaultLeaseTimings 2s / 1.5s / 500ms): a dead
// node's addresses move about Duration after its last renewal plus a few
// round trips; on SIGTERM the node stops answering and releases its pools,
// and the others take over within a few round trips.
package election
