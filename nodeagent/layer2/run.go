package layer2

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
)

// Run answers requests until ctx ends (then it returns nil) or a socket
// fails for good (then it returns the error, and the agent should build a
// new Responder: the interface may have been replaced). It may be called
// again after it returned, but not twice at once. Close also ends it.
func (r *Responder) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return fmt.Errorf("layer2: responder on interface %s is already running", r.ifi.Name)
	}
	defer r.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var loops []func(context.Context) error
	if r.arp != nil {
		loops = append(loops, r.serveARP)
	}
	if r.ndp != nil {
		loops = append(loops, r.serveNDP)
	}
	// Blocked reads only return when their deadline passes: move it to now
	// when ctx ends, and clear what a previous Run left.
	r.setReadDeadlines(time.Time{})
	stop := context.AfterFunc(ctx, func() { r.setReadDeadlines(time.Now()) })
	defer stop()

	errc := make(chan error, len(loops))
	for _, loop := range loops {
		go func() { errc <- loop(ctx) }()
	}
	var first error
	for range loops {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

func (r *Responder) setReadDeadlines(t time.Time) {
	if r.arp != nil {
		_ = r.arp.SetReadDeadline(t)
	}
	if r.ndp != nil {
		_ = r.ndp.SetReadDeadline(t)
	}
}

func (r *Responder) serveARP(ctx context.Context) error {
	for {
		p, err := r.arp.ReadFrom()
		if err != nil {
			if stop, err := r.readFailed(ctx, "ARP", err); stop {
				return err
			}
			continue
		}
		r.handleARP(p)
	}
}

func (r *Responder) serveNDP(ctx context.Context) error {
	for {
		m, src, err := r.ndp.ReadFrom()
		if err != nil {
			if stop, err := r.readFailed(ctx, "NDP", err); stop {
				return err
			}
			continue
		}
		r.handleNS(m, src)
	}
}

// readFailed decides whether a read error ends the loop, and with what:
// nil when Run was asked to stop, the error when the socket is broken.
// A timeout with ctx still live is left over from an earlier Run.
func (r *Responder) readFailed(ctx context.Context, proto string, err error) (bool, error) {
	switch {
	case ctx.Err() != nil || r.isClosed():
		return true, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, nil
	case transientReadError(err):
		r.log.Info("interface went down; still listening", "protocol", proto, "error", err.Error())
		_ = sleep(ctx, 100*time.Millisecond) // the next read sees ctx ending
		return false, nil
	default:
		return true, fmt.Errorf("layer2: reading %s on interface %s: %w", proto, r.ifi.Name, err)
	}
}

// sleep waits d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Announce sends, for each of addrs, a gratuitous ARP (IPv4) or unsolicited
// Neighbor Advertisement (IPv6) with the MAC it is answered with, so clients
// that cached another MAC switch at once. It does that AnnounceCount times,
// AnnounceInterval apart, the first immediately, and returns when done or
// when ctx ends (with ctx's error).
//
// Each round looks the addresses up afresh, so an address removed from the
// answers meanwhile is no longer announced. Addresses not answered when
// Announce starts are reported in a *RejectedError (the others are still
// announced). Replies to requests go on while Announce waits; call it in a
// goroutine to not wait yourself.
func (r *Responder) Announce(ctx context.Context, addrs []netip.Addr) error {
	notAnswered := r.notAnswered(addrs)
	var sendErr error
	for round := range r.count {
		if round > 0 {
			if err := sleep(ctx, r.interval); err != nil {
				return err
			}
		}
		err := r.announceOnce(ctx, addrs)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && sendErr == nil {
			sendErr = err
		}
	}
	return errors.Join(rejected(notAnswered), sendErr)
}

func (r *Responder) notAnswered(addrs []netip.Addr) []*AddrError {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var errs []*AddrError
	for _, ip := range addrs {
		if _, ok := r.lookup(ip); !ok {
			err := ErrNotAnswered
			if r.closed {
				err = ErrClosed
			}
			errs = append(errs, &AddrError{Interface: r.ifi.Name, Addr: normalize(ip), Err: err})
		}
	}
	return errs
}

// announceOnce sends one announcement per answered address, paced by
// r.pace (shared by every Announce on the interface). Each is looked up and
// sent under the read lock, so none goes out after its address was
// removed; the lock is not held while waiting for the pace.
func (r *Responder) announceOnce(ctx context.Context, addrs []netip.Addr) error {
	var errs []error
	for _, ip := range addrs {
		if err := r.pace.Wait(ctx); err != nil {
			return err
		}
		if err := r.announceAddr(normalize(ip)); err != nil {
			errs = append(errs, fmt.Errorf("layer2: announcing %s on interface %s: %w", ip, r.ifi.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Responder) announceAddr(ip netip.Addr) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	mac, ok := r.lookup(ip)
	switch {
	case !ok:
		return nil
	case ip.Is4():
		return r.sendGratuitousARP(ip, mac)
	default:
		return r.sendUnsolicitedNA(ip, mac)
	}
}
