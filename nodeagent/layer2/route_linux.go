//go:build linux

package layer2

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// routeInterfaceIndex asks the kernel (RTM_GETROUTE, like `ip route get`)
// which interface it would send traffic to dst through. It runs in the
// network namespace of the calling thread.
func routeInterfaceIndex(dst netip.Addr) (int, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return 0, err
	}
	for _, r := range routes {
		if r.LinkIndex > 0 {
			return r.LinkIndex, nil
		}
	}
	return 0, fmt.Errorf("kernel returned no output interface")
}
