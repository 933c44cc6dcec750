package bgp

import (
	"errors"
	"fmt"
)

// ErrInvalidConfig is wrapped by every validation error so callers can tell
// bad input (do not retry) from runtime failures (retry).
var ErrInvalidConfig = errors.New("invalid BGP configuration")

func errInvalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}
