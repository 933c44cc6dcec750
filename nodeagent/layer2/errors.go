package layer2

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Errors of ResolveInterface and New, wrapped with the interface or IP they
// concern, so the agent can tell a misconfigured pool from a transient fault.
var (
	ErrInvalidSpec      = errors.New("invalid interface spec")
	ErrUnknownInterface = errors.New("no such interface")
	ErrLoopback         = errors.New("loopback interface cannot answer for the segment")
	ErrInterfaceDown    = errors.New("interface is down")
	ErrNotEthernet      = errors.New("interface has no Ethernet hardware address")
	ErrNoRoute          = errors.New("no route")
)

// Errors that say why SetAnswers or Announce refused an address. They are
// wrapped in *AddrError.
var (
	ErrInvalidAddr         = errors.New("not a global unicast IP address")
	ErrOutsideSubnets      = errors.New("outside every subnet of the interface")
	ErrInterfaceAddress    = errors.New("address of the interface itself")
	ErrInvalidHardwareAddr = errors.New("not a unicast Ethernet hardware address")
	ErrFamilyUnavailable   = errors.New("address family not available on this node")
	ErrNotAnswered         = errors.New("not among the answered addresses")
	ErrClosed              = errors.New("responder closed")
)

// AddrError says why one address was refused.
type AddrError struct {
	Interface string
	Addr      netip.Addr
	Err       error
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("layer2: %s on interface %s: %v", e.Addr, e.Interface, e.Err)
}

func (e *AddrError) Unwrap() error { return e.Err }

// RejectedError lists every address SetAnswers or Announce refused. The
// other addresses were applied, so one bad Service does not stop the others
// from being answered; the agent reports each entry as a problem naming the
// Service it belongs to.
type RejectedError struct {
	Errs []*AddrError
}

func (e *RejectedError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.Is(err, ErrOutsideSubnets) and friends see the causes.
func (e *RejectedError) Unwrap() []error {
	errs := make([]error, len(e.Errs))
	for i, err := range e.Errs {
		errs[i] = err
	}
	return errs
}

// rejected returns nil for no refusals, so callers can return it directly.
func rejected(errs []*AddrError) error {
	if len(errs) == 0 {
		return nil
	}
	return &RejectedError{Errs: errs}
}
