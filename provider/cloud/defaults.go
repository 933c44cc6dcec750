package cloud

import (
	"fmt"
	"os"
	"time"

	"k8s.io/cloud-provider/options"
)

// Shipped defaults. The framework's own (20 QPS, 30 burst, one service
// worker) throttle a burst of Services to a few per second; every Service
// costs the framework a finalizer patch, a status patch and two events, and
// the provider an IPClaim, a plan and an event, so the client needs room for
// several hundred requests per second to keep up with the API server. All
// stay overridable by their flags.
const (
	DefaultQPS                    = 500
	DefaultBurst                  = 1000
	DefaultConcurrentServiceSyncs = 10
	// DefaultLeaderElectionNamespace is where the manager's Lease lives,
	// next to the Deployment.
	DefaultLeaderElectionNamespace = "openelb-system"
	DefaultLeaderElectionName      = "openelb-cloud-controller-manager"
	// DefaultReservations is how many addresses per pool the leader claims
	// ahead of demand (--reservations-per-pool).
	DefaultReservations = 2
	// DefaultForeignGrace is how long an earlier leader's unused
	// reservations stay held (--stale-reservation-grace).
	DefaultForeignGrace = 90 * time.Second
)

// ApplyDefaults sets the provider's defaults on the framework's options,
// before flags are parsed.
func ApplyDefaults(o *options.CloudControllerManagerOptions) {
	o.Generic.ClientConnection.QPS = DefaultQPS
	o.Generic.ClientConnection.Burst = DefaultBurst
	o.ServiceController.ConcurrentServiceSyncs = DefaultConcurrentServiceSyncs
	o.KubeCloudShared.CloudProvider.Name = ProviderName
	o.Generic.LeaderElection.ResourceNamespace = DefaultLeaderElectionNamespace
	o.Generic.LeaderElection.ResourceName = DefaultLeaderElectionName
	// Routes are the CNI's business on bare metal.
	o.KubeCloudShared.ConfigureCloudRoutes = false
}

// ReadConfigFile validates the --cloud-config file, if any.
func ReadConfigFile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	return ReadConfig(f)
}
