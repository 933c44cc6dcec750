package agent

import "github.com/openelb/cloud-provider-openelb/nodeagent/election"

// LeaseName is the Lease of a layer-2 pool; see election.LeaseName.
//
// Deprecated: use election.LeaseName. It stays while conformance/cmd/bench,
// edited elsewhere, still calls it here.
func LeaseName(pool string) string { return election.LeaseName(pool) }

// DefaultLeaseTimings are the layer-2 election's default timings; see
// election.DefaultLeaseTimings.
//
// Deprecated: use election.DefaultLeaseTimings. It stays while
// conformance/cmd/bench, edited elsewhere, still reads it here.
var DefaultLeaseTimings = election.DefaultLeaseTimings
