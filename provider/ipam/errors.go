package ipam

import "errors"

// Sentinel errors. Every error returned by this package wraps one of them
// together with the pool, address or Service involved, so callers can both
// branch with errors.Is and show the message to users in an event.
var (
	// ErrInvalidRange reports an address range that cannot be parsed or is malformed.
	ErrInvalidRange = errors.New("invalid address range")
	// ErrInvalidPool reports a pool definition that SetPools refused (no name, duplicate name).
	ErrInvalidPool = errors.New("invalid pool")
	// ErrPoolOverlap reports a pool that SetPools refused because its range overlaps another pool.
	ErrPoolOverlap = errors.New("pools overlap")
	// ErrNoPool reports that no pool is eligible for the Service's namespace and family.
	ErrNoPool = errors.New("no eligible pool")
	// ErrPoolNotFound reports that a pool named by the Service does not exist.
	ErrPoolNotFound = errors.New("pool not found")
	// ErrPoolDisabled reports that the pool to allocate from is disabled.
	ErrPoolDisabled = errors.New("pool disabled")
	// ErrPoolExhausted reports that every candidate pool is full.
	ErrPoolExhausted = errors.New("pool exhausted")
	// ErrAddressTaken reports that an address is held by another Service that does not share it.
	ErrAddressTaken = errors.New("address already in use")
	// ErrNotInPool reports an explicitly requested address outside every (requested) pool.
	ErrNotInPool = errors.New("address not in any pool")
	// ErrFamilyMismatch reports that the requested IP families cannot be served by the requested pools or addresses.
	ErrFamilyMismatch = errors.New("IP family mismatch")
	// ErrPortClash reports that Services sharing an address would use the same protocol and port.
	ErrPortClash = errors.New("port clash on shared address")
	// ErrNotBound reports a pool, named or holding a requested address, that is bound to other namespaces.
	ErrNotBound = errors.New("pool not bound to the namespace")
	// ErrNotSelected reports a pool whose serviceSelector the Service's labels do not match.
	ErrNotSelected = errors.New("pool does not select the Service")
	// ErrShareNamespace reports Services of different namespaces that did not both opt in to sharing.
	ErrShareNamespace = errors.New("sharing across namespaces not allowed")
	// ErrShareTrafficPolicy reports Services that may not share an address because of externalTrafficPolicy Local.
	ErrShareTrafficPolicy = errors.New("sharing not allowed by traffic policy")
	// ErrInvalidRequest reports a request or call that is malformed (no Service name, bad families, invalid address).
	ErrInvalidRequest = errors.New("invalid request")
)
