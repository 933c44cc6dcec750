package layer2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
)

// Defaults of Options.
const (
	// DefaultAnnounceCount gratuitous messages per address: one can be lost,
	// three rarely are.
	DefaultAnnounceCount = 3
	// DefaultAnnounceInterval is above Linux's default ARP locktime (1 s),
	// within which a neighbour entry ignores a second update; announcements
	// closer together could be dropped as duplicates.
	DefaultAnnounceInterval = 1100 * time.Millisecond
	// DefaultAnnounceRate caps gratuitous ARPs and unsolicited NAs per
	// second on one interface, whatever the number of addresses taken over
	// at once: every one is a broadcast (or all-nodes multicast) that each
	// host and switch on the segment processes. A round for 1,000
	// addresses then spreads over two seconds instead of one burst;
	// requests are still answered at once, so a client that asks is never
	// slowed, only the refresh of caches that held another MAC.
	DefaultAnnounceRate = 500
	// announceBurst is how many announcements may go back to back.
	announceBurst = 50
	// conflictLogEvery is the least time between two log lines about the
	// same address claimed by another host; every conflict is counted.
	conflictLogEvery = time.Minute
)

// Options tunes a Responder. The zero value is ready to use.
type Options struct {
	// Logger receives each reply at V(4) (per-packet debugging; the agent
	// runs at --v=2), problems at V(0). The zero Logger
	// discards everything.
	Logger logr.Logger
	// AnnounceCount is how many gratuitous ARPs / unsolicited NAs Announce
	// sends per address; 0 means DefaultAnnounceCount.
	AnnounceCount int
	// AnnounceInterval spaces them; 0 means DefaultAnnounceInterval. Keep it
	// above 1 s on real networks (see DefaultAnnounceInterval).
	AnnounceInterval time.Duration
	// AnnounceRate caps announcements per second on the interface; 0 means
	// DefaultAnnounceRate.
	AnnounceRate int
}

// Stats are the Responder's counters since New, for the agent's metrics.
type Stats struct {
	ARPRequestsAnswered           uint64
	NeighborSolicitationsAnswered uint64
	GratuitousARPsSent            uint64
	UnsolicitedNAsSent            uint64
	// SendErrors counts replies and announcements the socket refused.
	SendErrors uint64
	// ARPConflicts counts ARP packets in which another MAC claims an
	// answered IPv4 address: a second answerer (a stale leader, a host with
	// the address configured) splits the Service's traffic.
	ARPConflicts uint64
}

type counters struct {
	arpAnswered, nsAnswered, garpSent, unaSent, sendErrors, arpConflicts atomic.Uint64
}

// Responder answers ARP requests and neighbor solicitations on one interface
// for a configurable set of IPs. Its methods are safe for concurrent use.
type Responder struct {
	ifi      *net.Interface
	log      logr.Logger
	count    int
	interval time.Duration
	// prefixes returns the interface's current addresses; read on every
	// SetAnswers because addresses can change while the agent runs.
	prefixes func() ([]netip.Prefix, error)

	arp arpConn // nil: IPv4 not served
	ndp ndpConn // nil: IPv6 not served (disabled in the kernel)

	// mu is held for reading while a reply or announcement is looked up and
	// sent, and for writing while answers change: once SetAnswers or Close
	// returns, no reply for a removed address is in flight or can start.
	mu      sync.RWMutex
	answers map[netip.Addr]net.HardwareAddr
	groups  map[netip.Addr]bool // solicited-node multicast groups joined
	closed  bool

	running atomic.Bool
	stats   counters

	// pace spaces announcements (see DefaultAnnounceRate).
	pace *rate.Limiter
	// conflictMu guards conflictLogged: when a conflict about each address
	// was last logged.
	conflictMu     sync.Mutex
	conflictLogged map[netip.Addr]time.Time
}

// New opens the ARP and NDP sockets on ifi (which needs CAP_NET_RAW). The
// Responder answers nothing until SetAnswers and Run. If the kernel has IPv6
// disabled it serves IPv4 only and refuses IPv6 answers.
func New(ifi *net.Interface, opts Options) (*Responder, error) {
	if ifi == nil {
		return nil, fmt.Errorf("layer2: %w: nil interface", ErrUnknownInterface)
	}
	if err := checkUsable(ifi); err != nil {
		return nil, fmt.Errorf("layer2: %w", err)
	}
	a, err := openARP(ifi)
	if err != nil {
		return nil, err
	}
	n, err := openNDP(ifi)
	switch {
	case err != nil && ipv6Unsupported(err):
		opts.Logger.Info("IPv6 is disabled in the kernel; answering ARP only", "interface", ifi.Name)
		n = nil
	case err != nil:
		_ = a.Close()
		return nil, err
	}
	prefixes := func() ([]netip.Prefix, error) { return InterfacePrefixes(ifi) }
	return newResponder(ifi, opts, a, n, prefixes), nil
}

// newResponder is New without sockets, for tests with fakes. A nil a or n
// means the family is not served.
func newResponder(ifi *net.Interface, opts Options, a arpConn, n ndpConn, prefixes func() ([]netip.Prefix, error)) *Responder {
	r := &Responder{
		ifi:      ifi,
		log:      opts.Logger.WithValues("interface", ifi.Name),
		count:    opts.AnnounceCount,
		interval: opts.AnnounceInterval,
		prefixes: prefixes,
		arp:      a,
		ndp:      n,
		groups:   map[netip.Addr]bool{},
	}
	if r.count <= 0 {
		r.count = DefaultAnnounceCount
	}
	if r.interval <= 0 {
		r.interval = DefaultAnnounceInterval
	}
	perSecond := opts.AnnounceRate
	if perSecond <= 0 {
		perSecond = DefaultAnnounceRate
	}
	r.pace = rate.NewLimiter(rate.Limit(perSecond), min(announceBurst, perSecond))
	r.conflictLogged = map[netip.Addr]time.Time{}
	return r
}

// Interface is the interface the Responder answers on.
func (r *Responder) Interface() *net.Interface { return r.ifi }

// SetAnswers replaces the set of IPs answered and the MAC each is answered
// with (usually the interface's own MAC; another node's on the same segment
// for externalTrafficPolicy Local).
//
// Each IP must be a global unicast address inside one of the interface's
// subnets and not the interface's own address, and each MAC a unicast
// Ethernet address. Entries that fail are left out and reported together in
// a *RejectedError naming each IP; the others take effect regardless.
// SetAnswers(nil) stops all answering, even if the interface is gone.
//
// The switch is atomic: a request is answered from either the old or the
// new set, and once SetAnswers returns no reply from the old set is in
// flight. The interface's addresses are read afresh on every call, so the
// subnet check follows address changes.
func (r *Responder) SetAnswers(answers map[netip.Addr]net.HardwareAddr) error {
	valid, errs := r.validate(answers)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		if len(valid) == 0 {
			return rejected(errs)
		}
		return fmt.Errorf("layer2: set answers on interface %s: %w", r.ifi.Name, ErrClosed)
	}
	errs = append(errs, r.syncGroups(valid)...)
	r.answers = valid
	sortAddrErrors(errs)
	return rejected(errs)
}

// validate splits answers into those that may be answered (normalised and
// copied, so the caller may reuse its map and slices) and the refusals.
func (r *Responder) validate(answers map[netip.Addr]net.HardwareAddr) (map[netip.Addr]net.HardwareAddr, []*AddrError) {
	if len(answers) == 0 {
		return nil, nil
	}
	prefixes, prefixErr := r.prefixes()
	valid := make(map[netip.Addr]net.HardwareAddr, len(answers))
	var errs []*AddrError
	for ip, mac := range answers {
		ip = normalize(ip)
		err := prefixErr
		if err == nil {
			err = r.check(ip, mac, prefixes)
		}
		if err != nil {
			errs = append(errs, &AddrError{Interface: r.ifi.Name, Addr: ip, Err: err})
			continue
		}
		valid[ip] = slices.Clone(mac)
	}
	return valid, errs
}

// check says why ip cannot be answered with mac on this interface, if so.
func (r *Responder) check(ip netip.Addr, mac net.HardwareAddr, prefixes []netip.Prefix) error {
	switch {
	case !ip.IsGlobalUnicast():
		return ErrInvalidAddr
	case !isUnicastEthernet(mac):
		return fmt.Errorf("%w: %q", ErrInvalidHardwareAddr, mac)
	case ip.Is4() && r.arp == nil, ip.Is6() && r.ndp == nil:
		return ErrFamilyUnavailable
	}
	return CheckAddr(ip, prefixes)
}

// CheckAddr says why ip cannot be answered for on an interface with these
// addresses (InterfacePrefixes), if so: it must be a global unicast
// address inside one of the subnets and not one of the addresses
// themselves. The agent uses it to decide whether a node may compete for a
// pool before it answers anything; SetAnswers applies the same check.
func CheckAddr(ip netip.Addr, prefixes []netip.Prefix) error {
	ip = normalize(ip)
	if !ip.IsGlobalUnicast() {
		return ErrInvalidAddr
	}
	inSubnet := false
	for _, p := range prefixes {
		if p.Addr() == ip {
			return ErrInterfaceAddress
		}
		inSubnet = inSubnet || p.Contains(ip)
	}
	if !inSubnet {
		return fmt.Errorf("%w %v", ErrOutsideSubnets, prefixes)
	}
	return nil
}

// normalize maps the forms of one address to one map key.
func normalize(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

func sortAddrErrors(errs []*AddrError) {
	slices.SortFunc(errs, func(a, b *AddrError) int { return a.Addr.Compare(b.Addr) })
}

// lookup returns the MAC ip is answered with. The caller holds r.mu.
func (r *Responder) lookup(ip netip.Addr) (net.HardwareAddr, bool) {
	mac, ok := r.answers[normalize(ip)]
	return mac, ok
}

// Stats returns the counters.
func (r *Responder) Stats() Stats {
	return Stats{
		ARPRequestsAnswered:           r.stats.arpAnswered.Load(),
		NeighborSolicitationsAnswered: r.stats.nsAnswered.Load(),
		GratuitousARPsSent:            r.stats.garpSent.Load(),
		UnsolicitedNAsSent:            r.stats.unaSent.Load(),
		SendErrors:                    r.stats.sendErrors.Load(),
		ARPConflicts:                  r.stats.arpConflicts.Load(),
	}
}

// Close stops answering at once, ends Run and releases the sockets. It is
// idempotent.
func (r *Responder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.answers = nil
	r.mu.Unlock()

	var errs []error
	if r.arp != nil {
		errs = append(errs, r.arp.Close())
	}
	if r.ndp != nil {
		errs = append(errs, r.ndp.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("layer2: closing responder on interface %s: %w", r.ifi.Name, err)
	}
	return nil
}

func (r *Responder) isClosed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.closed
}

// countSend updates the counters after a send and logs a failure.
func (r *Responder) countSend(err error, sent *atomic.Uint64, what string, ip netip.Addr) {
	if err != nil {
		r.stats.sendErrors.Add(1)
		r.log.Error(err, "send failed", "message", what, "ip", ip)
		return
	}
	sent.Add(1)
}
