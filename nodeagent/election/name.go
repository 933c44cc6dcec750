package election

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// LeasePrefix starts the name of every layer-2 Lease: the speakers'
// admission policy lets them write only Leases with this prefix.
const LeasePrefix = "openelb-layer2-"

// NodeLeasePrefix starts the name of each node's layer-2 liveness Lease.
const NodeLeasePrefix = LeasePrefix + "node-"

// NodeLeaseName is the layer-2 Lease of a node, in the speakers'
// namespace. Names too long for a Lease end in a hash of the node name, so
// two long node names never share a Lease; the node is also the Lease's
// holderIdentity, which is what readers go by.
func NodeLeaseName(node string) string {
	const maxName = 253
	name := NodeLeasePrefix + node
	if len(name) <= maxName {
		return name
	}
	sum := sha256.Sum256([]byte(node))
	h := hex.EncodeToString(sum[:8])
	return strings.TrimRight(name[:maxName-len(h)-1], "-.") + "-" + h
}

// LeaseComponent is the app.kubernetes.io/component label of the node
// Leases; the speakers watch only Leases with it.
const LeaseComponent = "layer2-node"
