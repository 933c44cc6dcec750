//go:build linux

package harness

import "syscall"

// sysProcAttr puts the child in its own process group (so Stop can signal
// the whole group by ID) and asks the kernel to kill it if we die first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
