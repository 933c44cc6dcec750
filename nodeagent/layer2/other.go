//go:build !linux

package layer2

import (
	"errors"
	"net"
	"net/netip"
)

// The agent only runs on Linux; these stubs keep the package (and its
// fake-based tests) compiling elsewhere.

var errNoTransport = errors.New("layer2: only supported on Linux")

func routeInterfaceIndex(netip.Addr) (int, error) { return 0, errNoTransport }

func openARP(*net.Interface) (arpConn, error) { return nil, errNoTransport }

func openNDP(*net.Interface) (ndpConn, error) { return nil, errNoTransport }

func transientReadError(error) bool { return false }

func ipv6Unsupported(error) bool { return false }
