package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// InNS runs f on an OS thread switched into namespace ns. Sockets created by
// f belong to ns for their whole life, whichever thread uses them later. If
// switching back fails the thread is left locked, so the Go runtime
// discards it instead of reusing a thread in the wrong namespace.
func InNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving %s: %w", ns, err))
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenTCP opens a TCP listener inside ns; the lab closes it on Close.
func (l *Lab) ListenTCP(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	// An address of one family listens on that family only: Go's "tcp"
	// would take 0.0.0.0 as the dual-stack [::], which collides with an
	// IPv6 listener on the same port.
	network := "tcp"
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			network = map[bool]string{true: "tcp4", false: "tcp6"}[ip.Is4()]
		}
	}
	err := InNS(ns, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	l.OnClose(func() error { _ = ln.Close(); return nil })
	return ln, nil
}

// DialTCP connects from inside ns.
func DialTCP(ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := InNS(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// Forwarder relays TCP connections accepted inside a namespace to an address
// of the caller's namespace (e.g. a kube-apiserver on 127.0.0.1): the
// management network of a lab. Down and Up cut and restore it, to test
// behaviour while the API server is unreachable.
type Forwarder struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	// latency and stall slow the relayed data (see SetLatency, Stall).
	latency time.Duration
	stall   chan struct{} // non-nil while stalled; closed on Resume
}

// Forward listens on listenAddr inside ns and relays to target.
func (l *Lab) Forward(ns, listenAddr, target string) (*Forwarder, error) {
	ln, err := l.ListenTCP(ns, listenAddr)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go f.serve()
	l.OnClose(func() error { f.Down(); return nil })
	return f, nil
}

func (f *Forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.down {
			f.mu.Unlock()
			_ = c.Close()
			continue
		}
		f.mu.Unlock()
		go f.relay(c)
	}
}

func (f *Forwarder) relay(c net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	u, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.target)
	cancel()
	if err != nil {
		_ = c.Close()
		return
	}
	if !f.track(c, u) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { f.pipe(u, c); done <- struct{}{} }()
	go func() { f.pipe(c, u); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = u.Close()
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, u)
	f.mu.Unlock()
}

func (f *Forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

// Down refuses new connections and cuts every open one. It ends a stall.
func (f *Forwarder) Down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	f.resumeLocked()
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}

// Up accepts connections again.
func (f *Forwarder) Up() {
	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
}
