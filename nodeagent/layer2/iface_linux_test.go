//go:build linux

package layer2

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

// These run in the test's own network namespace and only read it; the
// cases that need a real Ethernet interface are in TestInNetworkNamespaces.
func TestResolveInterfaceErrors(t *testing.T) {
	tests := map[string]error{
		"":                    ErrInvalidSpec,
		"   ":                 ErrInvalidSpec,
		"lo":                  ErrLoopback,
		"no-such-if0":         ErrUnknownInterface,
		"can_reach:":          ErrInvalidSpec,
		"can_reach:not-an-ip": ErrInvalidSpec,
		"can_reach:127.0.0.1": ErrLoopback,
		"can_reach:::1":       ErrLoopback,
	}
	for spec, want := range tests {
		t.Run(spec, func(t *testing.T) {
			_, err := ResolveInterface(spec)
			if !errors.Is(err, want) {
				t.Fatalf("ResolveInterface(%q) = %v, want %v", spec, err, want)
			}
		})
	}
}

func TestInterfacePrefixesOfLoopback(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatalf("no lo: %v", err)
	}
	prefixes, err := InterfacePrefixes(lo)
	if err != nil {
		t.Fatal(err)
	}
	want := netip.MustParsePrefix("127.0.0.1/8")
	for _, p := range prefixes {
		if p == want {
			return
		}
	}
	t.Fatalf("InterfacePrefixes(lo) = %v, want %v among them", prefixes, want)
}
