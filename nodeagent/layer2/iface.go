package layer2

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// CanReachPrefix introduces an interface spec that names a destination
// instead of an interface (OpenELB's Eip spec.interface convention): the
// interface is the one the kernel would send that destination's traffic
// through, which keeps working when interface names differ between nodes.
const CanReachPrefix = "can_reach:"

// ResolveInterface returns the interface a layer-2 pool answers on. spec is
// an interface name ("eth0") or "can_reach:<IP>", meaning the interface of
// the kernel's route to that IP (as `ip route get <IP>` shows it).
//
// The interface must exist, be up, not be a loopback and have an Ethernet
// address: ARP and NDP replies need a segment and a MAC.
func ResolveInterface(spec string) (*net.Interface, error) {
	spec = strings.TrimSpace(spec)
	var (
		ifi *net.Interface
		err error
	)
	switch {
	case spec == "":
		return nil, fmt.Errorf("layer2: %w: empty", ErrInvalidSpec)
	case strings.HasPrefix(spec, CanReachPrefix):
		ifi, err = interfaceToward(strings.TrimSpace(strings.TrimPrefix(spec, CanReachPrefix)))
	default:
		ifi, err = interfaceByName(spec)
	}
	if err != nil {
		return nil, err
	}
	if err := checkUsable(ifi); err != nil {
		if ifi.Name != spec {
			return nil, fmt.Errorf("layer2: %s resolves to %w", spec, err)
		}
		return nil, fmt.Errorf("layer2: %w", err)
	}
	return ifi, nil
}

func interfaceByName(name string) (*net.Interface, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("layer2: interface %q: %w: %w", name, ErrUnknownInterface, err)
	}
	return ifi, nil
}

// interfaceToward asks the kernel which interface its route to dst uses.
func interfaceToward(dst string) (*net.Interface, error) {
	ip, err := netip.ParseAddr(dst)
	if err != nil {
		return nil, fmt.Errorf("layer2: %w: %s%s: %w", ErrInvalidSpec, CanReachPrefix, dst, err)
	}
	ip = ip.Unmap()
	index, err := routeInterfaceIndex(ip)
	if err != nil {
		return nil, fmt.Errorf("layer2: route to %s: %w: %w", ip, ErrNoRoute, err)
	}
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return nil, fmt.Errorf("layer2: route to %s uses interface index %d: %w: %w", ip, index, ErrUnknownInterface, err)
	}
	return ifi, nil
}

// checkUsable refuses interfaces that cannot carry ARP/NDP for a segment.
// A loopback is refused even though it is up: a route to a local address
// resolves to lo, and answering there would reach nobody.
func checkUsable(ifi *net.Interface) error {
	switch {
	case ifi.Flags&net.FlagLoopback != 0:
		return fmt.Errorf("interface %q: %w", ifi.Name, ErrLoopback)
	case ifi.Flags&net.FlagUp == 0:
		return fmt.Errorf("interface %q: %w", ifi.Name, ErrInterfaceDown)
	case !isUnicastEthernet(ifi.HardwareAddr):
		return fmt.Errorf("interface %q (hardware address %q): %w", ifi.Name, ifi.HardwareAddr, ErrNotEthernet)
	}
	return nil
}

// InterfacePrefixes returns the interface's IPv4 and IPv6 addresses with
// their prefix lengths (192.0.2.5/24, as `ip addr` shows them), so a caller
// can check both "is in the interface's subnet" (Prefix.Contains) and "is
// the interface's own address" (Prefix.Addr).
func InterfacePrefixes(ifi *net.Interface) ([]netip.Prefix, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("layer2: addresses of interface %q: %w", ifi.Name, err)
	}
	prefixes := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := prefixOf(a); ok {
			prefixes = append(prefixes, p)
		}
	}
	return prefixes, nil
}

func prefixOf(a net.Addr) (netip.Prefix, bool) {
	ipn, ok := a.(*net.IPNet)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ipn.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := ipn.Mask.Size()
	ip = ip.Unmap()
	if bits != ip.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones), true
}

// isUnicastEthernet reports whether mac can be the answer to "who has IP":
// 6 bytes, not all zero, not a group address.
func isUnicastEthernet(mac net.HardwareAddr) bool {
	if len(mac) != 6 || mac[0]&1 != 0 {
		return false
	}
	for _, b := range mac {
		if b != 0 {
			return true
		}
	}
	return false
}
