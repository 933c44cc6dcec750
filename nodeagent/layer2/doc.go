// Package layer2 makes a node answer ARP (IPv4) and NDP neighbor
// solicitations (IPv6) for LoadBalancer Service IPs of layer-2 pools, so that
// hosts on the same segment send the Service traffic to it.
//
// Exactly one node per pool answers at a time; electing it is the caller's
// job. The node agent resolves the pool's interface with ResolveInterface,
// opens a Responder on it with New, keeps Run going, and calls SetAnswers
// whenever the set of IPs (or the MAC to answer with) changes. After taking
// over, it calls Announce so that clients which cached the previous leader's
// MAC move at once instead of waiting for their neighbour entry to expire.
// When it loses leadership it calls SetAnswers(nil) or Close: from the moment
// either returns, no further reply is sent.
//
// The Responder only answers for IPs inside one of the interface's own
// subnets: a host elsewhere would never ask this segment, and answering for
// addresses the segment does not own would hijack them.
//
// The sockets sit behind two small interfaces (arpConn, ndpConn) so the
// protocol logic is tested with in-memory fakes; the real adapters use an
// AF_PACKET datagram socket (ARP) and a raw ICMPv6 socket (NDP), both bound to
// the interface. Both need CAP_NET_RAW.
//
// Known limits, inherent to answering for addresses the node does not own:
//   - A client re-validating a cached entry (neighbour unreachability
//     detection) sends a unicast solicitation addressed to the IPv6 VIP
//     itself. The node's kernel drops it before any socket sees it, so it is
//     not answered; after its unicast probes (3 s on Linux, during which it
//     keeps sending to the cached MAC) the client solicits by multicast
//     again, which is answered. Measured in the namespace lab. Unicast ARP
//     requests reach the ARP socket and are answered.
//   - When answering with another node's MAC (externalTrafficPolicy Local),
//     such unicast re-validations go to that node, which answers or not
//     depending on its own configuration; the client then falls back to
//     broadcast/multicast, which the leader answers.
package layer2
