package v1alpha2

import (
	"fmt"
	"net/netip"
	"path"
	"strings"
)

// CanReachPrefix starts an interface given as the one routing to an IP.
const CanReachPrefix = "can_reach:"

// ParseInterfaceList splits a comma-separated interface list (the
// AnnotationLayer2Interface syntax) and checks each entry: a name, a shell
// pattern, or can_reach:<IP>.
func ParseInterfaceList(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if err := CheckInterfaceSpec(f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// CheckInterfaceSpec checks one interface entry.
func CheckInterfaceSpec(f string) error {
	switch {
	case f == "":
		return fmt.Errorf("empty interface entry")
	case len(f) > 64:
		return fmt.Errorf("interface entry %q: longer than 64 characters", f)
	case strings.HasPrefix(f, CanReachPrefix):
		if _, err := netip.ParseAddr(strings.TrimPrefix(f, CanReachPrefix)); err != nil {
			return fmt.Errorf("interface entry %q: %w", f, err)
		}
	default:
		if _, err := path.Match(f, ""); err != nil {
			return fmt.Errorf("interface entry %q: bad pattern: %w", f, err)
		}
	}
	return nil
}
