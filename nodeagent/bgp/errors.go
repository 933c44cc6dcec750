package bgp

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrInvalidConfig is wrapped by every validation error so callers can tell
// bad input (do not retry) from runtime failures (retry).
var ErrInvalidConfig = errors.New("invalid BGP configuration")

func errInvalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

// PeerError is a peer Apply left out while applying everything else: its
// settings are invalid (Err wraps ErrInvalidConfig), another peer has its
// address, or GoBGP refused or failed to replace the neighbor. Apply tries
// it again on every call until it is configured.
type PeerError struct {
	Name    string // the Peer's Name
	Address netip.Addr
	Err     error
}

func (e *PeerError) Error() string {
	if !e.Address.IsValid() {
		return fmt.Sprintf("peer %q: %v", e.Name, e.Err)
	}
	return fmt.Sprintf("peer %q (%s): %v", e.Name, e.Address, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// SplitPeerErrors separates the *PeerError values of an Apply error (found
// through errors.Join, not through wrapping) from the other failures,
// joined again (nil when there are none).
func SplitPeerErrors(err error) ([]*PeerError, error) {
	var peers []*PeerError
	var rest []error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *PeerError:
			peers = append(peers, e)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		default:
			rest = append(rest, err)
		}
	}
	walk(err)
	return peers, errors.Join(rest...)
}
