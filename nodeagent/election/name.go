package election

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// LeasePrefix starts the name of every layer-2 pool's Lease, so that
// `kubectl get lease` shows which node answers for which pool.
const LeasePrefix = "openelb-layer2-"

// LeaseName is the Lease of a layer-2 pool (Eip), in the speakers'
// namespace. Names too long for a Lease end in a hash of the pool name, so
// two long pool names never share a Lease.
func LeaseName(pool string) string {
	const maxName = 253
	name := LeasePrefix + pool
	if len(name) <= maxName {
		return name
	}
	sum := sha256.Sum256([]byte(pool))
	h := hex.EncodeToString(sum[:8])
	return strings.TrimRight(name[:maxName-len(h)-1], "-.") + "-" + h
}
