// Package bgp advertises LoadBalancer Service IPs to the leaf routers over BGP, hiding the embedded GoBGP server behind the Speaker interface.
package bgp
