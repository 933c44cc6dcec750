// Package netlab builds throw-away network labs on one Linux machine: network
// namespaces joined by veth pairs and bridges, FRR routers running inside
// them, processes started inside them, and sockets opened inside them by the
// calling Go process. Everything a Lab creates is named with a per-lab prefix
// and removed by Close (processes by PID, namespaces by name), so labs never
// touch the host's own network or each other.
//
// It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2; FRR for routers.
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Lab owns a set of namespaces and processes.
type Lab struct {
	prefix string
	dir    string

	mu         sync.Mutex
	namespaces []string
	procs      []*Proc
	closers    []func() error
	closed     bool
}

// New makes an empty lab. Its namespaces are named "<prefix><rand>-<name>";
// prefix should be short (namespace names are kept under 32 characters for
// readability in `ip netns`).
func New(prefix string) (*Lab, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	p := prefix + hex.EncodeToString(b[:]) + "-"
	dir, err := os.MkdirTemp("", "netlab-"+p)
	if err != nil {
		return nil, fmt.Errorf("lab dir: %w", err)
	}
	// Daemons that drop privileges (FRR runs as frr) must reach their
	// runtime directories below it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	return &Lab{prefix: p, dir: dir}, nil
}

// Dir is the lab's scratch directory (configs, logs, sockets).
func (l *Lab) Dir() string { return l.dir }

// NS returns the full namespace name for a short name.
func (l *Lab) NS(name string) string { return l.prefix + name }

// AddNS creates a namespace with loopback up and returns its full name.
func (l *Lab) AddNS(name string) (string, error) {
	ns := l.NS(name)
	if err := run("ip", "netns", "add", ns); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
	if err := run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return ns, nil
}

// IP runs `ip -n <ns> args...`.
func (l *Lab) IP(ns string, args ...string) error {
	return run("ip", append([]string{"-n", ns}, args...)...)
}

// Exec runs a command inside ns and returns its combined output.
func (l *Lab) Exec(ctx context.Context, ns string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", name, ns, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sysctl sets key=value inside ns.
func (l *Lab) Sysctl(ns, key, value string) error {
	_, err := l.Exec(context.Background(), ns, "sysctl", "-q", "-w", key+"="+value)
	return err
}

// Veth joins nsA/ifA and nsB/ifB with a veth pair, both ends up.
func (l *Lab) Veth(nsA, ifA, nsB, ifB string) error {
	if err := run("ip", "link", "add", "name", ifA, "netns", nsA, "type", "veth", "peer", "name", ifB, "netns", nsB); err != nil {
		return err
	}
	if err := l.IP(nsA, "link", "set", ifA, "up"); err != nil {
		return err
	}
	return l.IP(nsB, "link", "set", ifB, "up")
}

// Bridge creates bridge br in ns, up.
func (l *Lab) Bridge(ns, br string) error {
	if err := l.IP(ns, "link", "add", br, "type", "bridge"); err != nil {
		return err
	}
	return l.IP(ns, "link", "set", br, "up")
}

// Enslave attaches ifname to bridge br, both in ns.
func (l *Lab) Enslave(ns, ifname, br string) error {
	return l.IP(ns, "link", "set", ifname, "master", br)
}

// Addr adds a CIDR address to ifname in ns.
func (l *Lab) Addr(ns, ifname, cidr string) error {
	return l.IP(ns, "addr", "add", cidr, "dev", ifname)
}

// Proc is a process the lab started; it is stopped by Close.
type Proc struct {
	Name    string
	NS      string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// Pid of the process.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to end.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.Pid(), timeout)
	}
}

// Stop sends SIGTERM, then SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Wait(grace); err == nil {
		return nil
	}
	_ = p.cmd.Process.Kill()
	return p.Wait(5 * time.Second)
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Kill()
	return p.Wait(5 * time.Second)
}

// Log returns the process's output so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail returns the last n lines of the output.
func (p *Proc) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Start runs bin inside ns (via `ip netns exec`, which execs in place, so
// the PID is the program's own), output to a log file in the lab dir.
// An empty ns runs it in the caller's namespace.
func (l *Lab) Start(ns, name, bin string, args ...string) (*Proc, error) {
	logPath := filepath.Join(l.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var cmd *exec.Cmd
	if ns == "" {
		cmd = exec.Command(bin, args...)
	} else {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group, so a Ctrl-C at the terminal reaches the test
	// (which cleans up) rather than every child at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, NS: ns, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// OnClose registers f to run first in Close (listeners, forwarders).
func (l *Lab) OnClose(f func() error) {
	l.mu.Lock()
	l.closers = append(l.closers, f)
	l.mu.Unlock()
}

// Close stops every process (SIGTERM, then SIGKILL), deletes every
// namespace the lab created and its scratch directory. Safe to call twice.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs, nss, closers := l.procs, l.namespaces, l.closers
	l.mu.Unlock()
	var errs []error
	for _, f := range slices.Backward(closers) {
		if err := f(); err != nil {
			errs = append(errs, err)
		}
	}
	stopErrs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopErrs[i] = p.Stop(3 * time.Second)
		}()
	}
	wg.Wait()
	errs = append(errs, stopErrs...)
	for _, ns := range nss {
		if err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if os.Getenv("NETLAB_KEEP") == "" {
		_ = os.RemoveAll(l.dir)
	}
	return errors.Join(errs...)
}

func run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
