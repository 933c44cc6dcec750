package bgp

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"
)

// Global is the speaker-wide BGP configuration. Changing any field restarts the BGP instance.
type Global struct {
	AS       uint32
	RouterID netip.Addr // must be IPv4 (BGP identifier)
	// ListenPort 0 means the speaker only dials out: routers are always
	// configured as neighbors by address, so an open port on every node is
	// not needed.
	ListenPort int32
	// ListenAddresses restrict the listener (none: every address).
	ListenAddresses []netip.Addr
	GracefulRestart bool
	RestartTime     uint32 // seconds; 0 = 120 when GracefulRestart
	// GRHelperOnly: help routers restart, but do not ask them to keep
	// this speaker's routes when it restarts.
	GRHelperOnly bool
	// GRNotification: graceful restart also on a NOTIFICATION (RFC 8538).
	GRNotification bool
	// GRDeferralTime is how long a restarting speaker waits for the
	// routers' End-of-RIB, in seconds (0: GoBGP's default).
	GRDeferralTime uint32
	// Policy is the admin's export routing policy (nil: none). Changing
	// it re-sends the paths without restarting the BGP instance.
	Policy *UserPolicy
}

// Equal compares two global configurations.
func (g Global) Equal(o Global) bool {
	return g.sameInstance(o) && samePolicy(g.Policy, o.Policy)
}

// sameInstance says whether g and o run the same BGP instance: everything
// but the policy.
func (g Global) sameInstance(o Global) bool {
	return g.AS == o.AS && g.RouterID == o.RouterID && g.ListenPort == o.ListenPort &&
		slices.Equal(g.ListenAddresses, o.ListenAddresses) && g.GracefulRestart == o.GracefulRestart &&
		g.RestartTime == o.RestartTime && g.GRHelperOnly == o.GRHelperOnly && g.GRNotification == o.GRNotification &&
		g.GRDeferralTime == o.GRDeferralTime
}

// BFD enables BFD liveness detection for a neighbor (GoBGP's native,
// single-hop asynchronous mode: control packets to UDP 3784 of the neighbor
// address, the speaker listening on UDP 3784 of every local address). Zero
// values take GoBGP's defaults (1 s intervals, multiplier 3). When BFD
// declares the neighbor down, GoBGP hard-resets the BGP session, so a dead
// router is noticed after about DetectMultiplier × the negotiated interval
// instead of the hold time.
type BFD struct {
	DesiredMinTx     time.Duration
	RequiredMinRx    time.Duration
	DetectMultiplier uint32
}

// Peer is one BGP neighbor (a leaf router).
type Peer struct {
	Name            string // BgpPeer object name, carried through to PeerState for status
	Address         netip.Addr
	AS              uint32
	Port            uint16        // 0 = 179
	Password        string        // TCP MD5; "" = none
	EBGPMultihopTTL uint32        // 0 = off
	HoldTime        time.Duration // 0 = 90s
	Keepalive       time.Duration // 0 = 30s
	// ConnectRetry 0 = 5s. GoBGP's own default (120s) would leave a node
	// unannounced for minutes after the router refused one connection.
	ConnectRetry    time.Duration
	GracefulRestart bool
	AddPathSendMax  uint32 // 0 = 255
	BFD             *BFD   // nil = off
	// MaxPrefixes bounds the prefixes of one address family the router
	// may send (0 = DefaultMaxPrefixes); see prefixlimit.go.
	MaxPrefixes uint32

	// OpenELB's neighbor settings GoBGP carries out (BgpPeer field names
	// in the agent).

	// Description is the neighbor's description ("" = Name).
	Description string
	// LocalAS replaces the global AS on this session (0 = the global AS).
	LocalAS uint32
	// RemovePrivateAS: "" keeps private AS numbers in the AS paths sent,
	// "all" removes them, "replace" replaces them with the local AS.
	RemovePrivateAS string
	// AllowOwnAS is how often the own AS may appear in a received path.
	AllowOwnAS uint8
	// ReplacePeerAS replaces the peer's AS with the local AS in paths sent.
	ReplacePeerAS bool
	// AdminDown configures the neighbor without ever opening the session.
	AdminDown bool
	// Passive waits for the router to connect.
	Passive bool
	// TCPMSS clamps the session's TCP segment size (0: the system's).
	TCPMSS uint16
	// NoIPv4, NoIPv6 leave a unicast family out of the session (both
	// are on by default).
	NoIPv4, NoIPv6 bool
	// GRRestartTime replaces the global restart time on this session (0:
	// the global one); GRHelperOnly, GRNotification as in Global;
	// GRLongLived enables long-lived graceful restart (RFC 9494) with
	// GRStaleRoutesTime seconds.
	GRRestartTime     uint32
	GRHelperOnly      bool
	GRNotification    bool
	GRLongLived       bool
	GRStaleRoutesTime uint32
	// SendCommunity is which communities the router receives:
	// SendCommunityAll (default), SendCommunityExtended (extended only)
	// or SendCommunityNone.
	SendCommunity SendCommunity
}

// SendCommunity says which community attributes a peer receives.
type SendCommunity uint8

const (
	// SendCommunityAll sends standard, extended and large communities.
	SendCommunityAll SendCommunity = iota
	// SendCommunityStandard sends standard and large communities, no
	// extended ones.
	SendCommunityStandard
	// SendCommunityExtended sends extended communities only.
	SendCommunityExtended
	// SendCommunityNone sends no community attribute.
	SendCommunityNone
)

// Path is one advertisement: Prefix reachable via NextHop, with Attrs.
// Prefix and NextHop identify it: a path whose Attrs change is re-sent
// (an implicit withdraw of the old one at the router), never withdrawn
// first.
type Path struct {
	Prefix  netip.Prefix // /32 or /128, or a pool's aggregate
	NextHop netip.Addr
	Attrs   Attrs
}

// PeerState is the observed state of one configured neighbor.
type PeerState struct {
	Name, Address     string
	State             string // "established", "active", "idle", ... lower case
	AddPathNegotiated bool   // the peer accepted our ADD-PATH send for the advertised families
	// NextHopSelf is true when the peer is served one path per prefix with
	// the speaker's own session address as next hop, because it did not
	// negotiate ADD-PATH for the family of the session: a single
	// third-party next hop would silently send all traffic to one node. It
	// stays true while that session is down (it will be served so again).
	NextHopSelf bool
	// LocalAddress is the speaker's address of the established session ("" otherwise).
	LocalAddress    string
	AdvertisedPaths int
	// UpdatesSent counts UPDATE messages sent to the peer since the neighbor
	// was configured (GoBGP's message counter; it restarts from 0 when the
	// neighbor is re-added after a setting change or the instance restarts).
	UpdatesSent uint64
	// BFDState is "up", "down", "init", "admin-down", or "" when BFD is off.
	BFDState string
	Uptime   time.Duration
	// ReceivedPrefixes counts the routes the router sent that GoBGP holds
	// in its Adj-RIB-In (all rejected: the speaker uses none), all
	// families, while the session is established.
	ReceivedPrefixes int
	// PrefixLimit is the most prefixes of one address family the router
	// may send (the peer's MaxPrefixes). PrefixLimitExceeded is set while
	// the session is held down because it sent more: the router then
	// receives none of the speaker's paths until a retry finds it within
	// the limit (see prefixlimit.go).
	PrefixLimit         uint32
	PrefixLimitExceeded bool
}

// Speaker is what the agent drives; the GoBGP implementation and a map-backed fake satisfy it.
type Speaker interface {
	// Apply makes the speaker's global config, neighbors and advertised paths equal to the arguments:
	// adds/updates/removes neighbors (a changed neighbor setting may reset that session only),
	// adds/withdraws paths. Several paths for one prefix with different next hops are all advertised,
	// each with its own stable path identifier (derived from prefix+next hop, so a restart reuses it).
	// A peer it cannot configure (invalid settings, the address of a peer whose Name sorts first,
	// a neighbor GoBGP refuses) is left out with a *PeerError in the returned error, and everything
	// else is still applied: one bad peer never holds back the other peers or the paths.
	// SplitPeerErrors tells those apart from the other failures.
	// A changed Global (AS, router ID, listen port) restarts the BGP instance.
	// The speaker may keep paths: the caller must not modify the slice afterwards.
	Apply(ctx context.Context, g Global, peers []Peer, paths []Path) error
	States(ctx context.Context) ([]PeerState, error)
	// Stop withdraws everything and closes sessions (graceful=false), or keeps routes at the peers
	// for graceful restart (graceful=true: stop without sending withdrawals/NOTIFICATION, so the
	// router keeps the paths as stale during the restart time).
	Stop(ctx context.Context, graceful bool) error
}

const (
	defaultRestartTime  = 120
	defaultHoldTime     = DefaultHoldTime
	defaultKeepalive    = DefaultKeepalive
	defaultConnectRetry = 5 * time.Second
	defaultSendMax      = 255
	defaultPort         = 179
	// maxHoldTime is the largest hold time an OPEN message carries (16 bits).
	maxHoldTime = 65535 * time.Second
	// maxPasswordLen is Linux's TCP MD5 key limit (TCP_MD5SIG_MAXKEYLEN):
	// GoBGP would accept a longer password and then fail every connection.
	maxPasswordLen = 80
)

func (g Global) withDefaults() Global {
	if g.GracefulRestart && g.RestartTime == 0 {
		g.RestartTime = defaultRestartTime
	}
	if !g.GracefulRestart {
		// Only meaningful with graceful restart; ignoring them avoids a
		// needless instance restart when they alone change.
		g.RestartTime, g.GRHelperOnly, g.GRNotification, g.GRDeferralTime = 0, false, false, 0
	}
	return g
}

func (g Global) validate() error {
	if g.AS == 0 {
		return errInvalid("global AS must not be 0")
	}
	if !g.RouterID.Is4() {
		return errInvalid("router ID %q must be an IPv4 address", g.RouterID)
	}
	if g.ListenPort < 0 || g.ListenPort > 65535 {
		return errInvalid("listen port %d out of range", g.ListenPort)
	}
	if g.RestartTime > MaxRestartTime {
		return errInvalid("graceful restart time %d out of range (0..%d)", g.RestartTime, MaxRestartTime)
	}
	return nil
}

// Timer defaults and limits the agent checks BgpConf/BgpPeer against.
const (
	// DefaultHoldTime is a peer's hold time when none is set.
	DefaultHoldTime = 90 * time.Second
	// DefaultKeepalive is a peer's keepalive interval when none is set.
	DefaultKeepalive = 30 * time.Second
	// MaxRestartTime is the largest graceful restart time: the capability
	// carries it in 12 bits.
	MaxRestartTime = 4095
)

func (p Peer) withDefaults() Peer {
	if p.Port == 0 {
		p.Port = defaultPort
	}
	if p.HoldTime == 0 {
		p.HoldTime = defaultHoldTime
	}
	if p.Keepalive == 0 {
		p.Keepalive = defaultKeepalive
	}
	if p.ConnectRetry == 0 {
		p.ConnectRetry = defaultConnectRetry
	}
	if p.AddPathSendMax == 0 {
		p.AddPathSendMax = defaultSendMax
	}
	if p.MaxPrefixes == 0 {
		p.MaxPrefixes = DefaultMaxPrefixes
	}
	if p.BFD != nil {
		b := *p.BFD
		p.BFD = &b
	}
	return p
}

// Validate says whether Apply can configure the peer, with the rules
// Apply uses: what GoBGP would refuse, truncate or fail on at every
// connection. Its messages name Peer's fields; callers that read peers
// from an API check them first, with their own field names, and keep this
// as the last word.
func (p Peer) Validate() error {
	return p.withDefaults().validate()
}

// validate checks a peer with defaults applied.
func (p Peer) validate() error {
	switch {
	case !p.Address.IsValid():
		return errInvalid("no address")
	case p.Address.IsUnspecified() || p.Address.IsMulticast():
		return errInvalid("address %s cannot be a BGP neighbor", p.Address)
	case p.AS == 0:
		return errInvalid("AS must not be 0")
	case p.EBGPMultihopTTL > math.MaxUint8:
		return errInvalid("multihop TTL %d > 255", p.EBGPMultihopTTL)
	case p.AddPathSendMax > math.MaxUint8:
		// GoBGP keeps 8 bits of it: 256 would silently become 0.
		return errInvalid("ADD-PATH send max %d > 255", p.AddPathSendMax)
	case p.HoldTime < 3*time.Second || p.HoldTime > maxHoldTime:
		return errInvalid("hold time %s out of range (3s..%s)", p.HoldTime, maxHoldTime)
	case p.Keepalive < 0 || p.Keepalive > maxHoldTime:
		return errInvalid("keepalive %s out of range (at most %s)", p.Keepalive, maxHoldTime)
	case p.Keepalive >= p.HoldTime:
		return errInvalid("keepalive %s is not below the hold time %s: the session would flap", p.Keepalive, p.HoldTime)
	case p.ConnectRetry < 0:
		return errInvalid("connect retry %s is negative", p.ConnectRetry)
	case len(p.Password) > maxPasswordLen:
		return errInvalid("password longer than %d bytes (TCP MD5 key limit)", maxPasswordLen)
	case p.RemovePrivateAS != "" && p.RemovePrivateAS != "all" && p.RemovePrivateAS != "replace":
		return errInvalid("remove-private-AS %q is not all or replace", p.RemovePrivateAS)
	case p.NoIPv4 && p.NoIPv6:
		return errInvalid("neither IPv4 nor IPv6 unicast enabled")
	case p.SendCommunity > SendCommunityNone:
		return errInvalid("send-community %d out of range", p.SendCommunity)
	case p.GRRestartTime > MaxRestartTime:
		return errInvalid("graceful restart time %d out of range (0..%d)", p.GRRestartTime, MaxRestartTime)
	case p.GRStaleRoutesTime > 1<<24-1:
		return errInvalid("long-lived stale routes time %d out of range (24 bits)", p.GRStaleRoutesTime)
	}
	if p.BFD != nil {
		if err := p.BFD.validate(); err != nil {
			return errInvalid("%s", err)
		}
	}
	return nil
}

// maxBFDInterval is the largest interval a BFD control packet can carry
// (a 32-bit count of microseconds).
const maxBFDInterval = time.Duration(math.MaxUint32) * time.Microsecond

// validate rejects timers GoBGP would refuse (multiplier is 8 bits on the
// wire) or silently truncate, so a typo surfaces in the status instead of
// an unexpected detection time.
func (b BFD) validate() error {
	for _, iv := range []struct {
		name string
		d    time.Duration
	}{{"desired min TX", b.DesiredMinTx}, {"required min RX", b.RequiredMinRx}} {
		if iv.d < 0 || iv.d > maxBFDInterval {
			return fmt.Errorf("BFD %s interval %s out of range (0..%s)", iv.name, iv.d, maxBFDInterval)
		}
	}
	if b.DetectMultiplier > math.MaxUint8 {
		return fmt.Errorf("BFD detect multiplier %d > 255", b.DetectMultiplier)
	}
	return nil
}

// equal compares normalized peers; BFD is a pointer so it is compared by value.
func (p Peer) equal(o Peer) bool {
	pb, ob := p.BFD, o.BFD
	p.BFD, o.BFD = nil, nil
	if p != o {
		return false
	}
	if (pb == nil) != (ob == nil) {
		return false
	}
	return pb == nil || *pb == *ob
}

func (p Path) validate() error {
	if !p.Prefix.IsValid() || !p.NextHop.IsValid() {
		return errInvalid("path %v via %v: invalid prefix or next hop", p.Prefix, p.NextHop)
	}
	if p.Prefix.Addr().Is4() != p.NextHop.Is4() {
		// IPv4 prefixes over IPv6 next hops need RFC 8950 extended next hop,
		// which the speaker does not negotiate.
		return errInvalid("path %v via %v: prefix and next hop families differ", p.Prefix, p.NextHop)
	}
	if p.Prefix.Bits() == 0 {
		return errInvalid("path %v: a default route is never advertised", p.Prefix)
	}
	if err := p.Attrs.Attributes().validate(); err != nil {
		return errInvalid("path %v via %v: %s", p.Prefix, p.NextHop, err)
	}
	return nil
}

func (p Path) normalize() Path {
	return Path{Prefix: p.Prefix.Masked(), NextHop: p.NextHop.Unmap(), Attrs: p.Attrs}
}
