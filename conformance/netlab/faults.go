package netlab

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"time"
)

// Faults a lab can inject: a slow or stalled API server behind a
// Forwarder, and processes (FRR daemons) crashed and started again.

// SetLatency delays every chunk of data the forwarder relays, in both
// directions, by d (0: none) from the moment it was read: each round trip
// through it takes 2d longer, as with a slow API server or a long link.
// It applies to open connections too.
func (f *Forwarder) SetLatency(d time.Duration) {
	f.mu.Lock()
	f.latency = d
	f.mu.Unlock()
}

// Stall stops relaying data on every connection, open and new, without
// closing any: an API server that accepts connections and answers nothing.
// Resume (or Down) relays again, what was held first.
func (f *Forwarder) Stall() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stall == nil {
		f.stall = make(chan struct{})
	}
}

// Resume ends a stall.
func (f *Forwarder) Resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resumeLocked()
}

func (f *Forwarder) resumeLocked() {
	if f.stall != nil {
		close(f.stall)
		f.stall = nil
	}
}

// hold waits while the forwarder stalls, and returns the latency to add.
func (f *Forwarder) hold() time.Duration {
	for {
		f.mu.Lock()
		stall, d := f.stall, f.latency
		f.mu.Unlock()
		if stall == nil {
			return d
		}
		<-stall
	}
}

// pipe relays src to dst until either fails, each chunk held for the
// latency (counted from when it was read) and while the forwarder stalls.
func (f *Forwarder) pipe(dst, src net.Conn) {
	type chunk struct {
		data []byte
		read time.Time
	}
	chunks := make(chan chunk, 64)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{buf[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		d := f.hold()
		time.Sleep(time.Until(c.read.Add(d)))
		if _, err := dst.Write(c.data); err != nil {
			_ = src.Close()
			for range chunks {
			}
			return
		}
	}
}

// Respawn starts p's command line again, in the same namespace and
// appending to the same log, as a supervisor restarting a crashed process
// would. p must have exited.
func (l *Lab) Respawn(p *Proc) (*Proc, error) {
	if !p.Exited() {
		return nil, fmt.Errorf("%s (pid %d) is still running", p.Name, p.Pid())
	}
	argv := p.cmd.Args // bin args..., or ip netns exec <ns> bin args...
	if p.NS != "" {
		argv = argv[4:]
	}
	return l.Start(p.NS, p.Name, argv[0], argv[1:]...)
}

// RestartDaemon SIGKILLs one of the router's daemons (a crash: no
// NOTIFICATION, sockets closed by the kernel), starts it again with the
// same configuration and returns once it answers on its VTY. It returns
// when the new process was started.
func (l *Lab) RestartDaemon(ctx context.Context, r *FRR, daemon string) (time.Time, error) {
	p := r.Daemon[daemon]
	if p == nil {
		return time.Time{}, fmt.Errorf("%s runs no %s", r.Name, daemon)
	}
	if err := p.Kill(); err != nil {
		return time.Time{}, err
	}
	q, err := l.Respawn(p)
	if err != nil {
		return time.Time{}, err
	}
	started := time.Now()
	r.Daemon[daemon] = q
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := exec.CommandContext(ctx, "vtysh", "--vty_socket", r.dir, "-d", daemon, "-c", "show version").Run()
		if err == nil {
			return started, nil
		}
		if q.Exited() {
			return started, fmt.Errorf("%s %s exited after its restart: %s", r.Name, daemon, q.LogTail(20))
		}
		if time.Now().After(deadline) {
			return started, fmt.Errorf("%s %s not answering on %s after its restart: %w", r.Name, daemon, filepath.Join(r.dir, daemon+".vty"), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Span is a stretch of time.
type Span struct{ From, To time.Time }

// Len is the span's duration.
func (s Span) Len() time.Duration { return s.To.Sub(s.From) }

// Unanswered returns the spans of [from, to) during which the prober's
// requests went unanswered: each starts at a request no reply followed
// before the next request, and ends at the next request that was
// answered (or at to). Only meaningful while probing.
func (w *ARPWatch) Unanswered(from, to time.Time) []Span {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Span
	var open *Span
	for i, start := range w.sent {
		if start.Before(from) || !start.Before(to) {
			continue
		}
		end := to
		if i+1 < len(w.sent) && w.sent[i+1].Before(to) {
			end = w.sent[i+1]
		}
		answered := false
		for _, s := range w.seen {
			if s.Kind == ARPReply && !s.At.Before(start) && s.At.Before(end) {
				answered = true
				break
			}
		}
		switch {
		case !answered && open == nil:
			open = &Span{From: start}
		case answered && open != nil:
			open.To = start
			out = append(out, *open)
			open = nil
		}
	}
	if open != nil {
		open.To = to
		out = append(out, *open)
	}
	return out
}
