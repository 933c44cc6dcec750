package v1alpha2

import (
	"encoding/hex"
	"net/netip"
)

// ClaimName is the IPClaim name for an address: the dotted form for IPv4
// and the 32 hex digits of the full address for IPv6 (":" is not allowed in
// object names). The mapping is one-to-one, which is what makes the claim's
// name a lock on the address.
func ClaimName(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	b := addr.As16()
	return "v6-" + hex.EncodeToString(b[:])
}
