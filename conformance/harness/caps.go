package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// speakerContainer is the container of the shipped DaemonSet.
const speakerContainer = "openelb-speaker"

// capBits maps the capabilities a speaker could be given (Kubernetes
// names, without CAP_) to their bit in a capability set.
var capBits = map[string]uint{
	"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "FOWNER": unix.CAP_FOWNER,
	"KILL": unix.CAP_KILL, "SETGID": unix.CAP_SETGID, "SETUID": unix.CAP_SETUID, "SETPCAP": unix.CAP_SETPCAP,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW, "IPC_LOCK": unix.CAP_IPC_LOCK,
	"SYS_ADMIN": unix.CAP_SYS_ADMIN, "SYS_PTRACE": unix.CAP_SYS_PTRACE, "SYS_RESOURCE": unix.CAP_SYS_RESOURCE,
	"SYS_TIME": unix.CAP_SYS_TIME, "BPF": unix.CAP_BPF, "PERFMON": unix.CAP_PERFMON,
}

// SpeakerCapabilities reads the capabilities the shipped DaemonSet
// (<deployDir>/speaker.yaml) adds to the speaker container (Kubernetes
// names: NET_RAW...), and checks the rest of its security context is what
// SpeakerCommand reproduces: root, every other capability dropped, no
// privilege escalation, not privileged.
func SpeakerCapabilities(deployDir string) ([]string, error) {
	path := filepath.Join(deployDir, "speaker.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(b, &ds); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	i := slices.IndexFunc(ds.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == speakerContainer })
	if i < 0 {
		return nil, fmt.Errorf("%s: no container %s", path, speakerContainer)
	}
	sc := ds.Spec.Template.Spec.Containers[i].SecurityContext
	switch {
	case sc == nil || sc.Capabilities == nil:
		return nil, fmt.Errorf("%s: container %s sets no capabilities", path, speakerContainer)
	case sc.RunAsUser == nil || *sc.RunAsUser != 0:
		return nil, fmt.Errorf("%s: container %s does not run as root (setpriv would need ambient capabilities)", path, speakerContainer)
	case !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		return nil, fmt.Errorf("%s: container %s drops %v, not [ALL]", path, speakerContainer, sc.Capabilities.Drop)
	case sc.Privileged != nil && *sc.Privileged:
		return nil, fmt.Errorf("%s: container %s is privileged", path, speakerContainer)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		return nil, fmt.Errorf("%s: container %s allows privilege escalation", path, speakerContainer)
	}
	caps := make([]string, 0, len(sc.Capabilities.Add))
	for _, c := range sc.Capabilities.Add {
		name := strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_")
		if _, ok := capBits[name]; !ok {
			return nil, fmt.Errorf("%s: capability %s unknown to the harness", path, c)
		}
		caps = append(caps, name)
	}
	return caps, nil
}

// SpeakerCommand returns the command running bin with args as the shipped
// DaemonSet runs the speaker: uid 0 with only the capabilities of
// SpeakerCapabilities (in the bounding set, hence permitted and effective
// for root; none inheritable, none ambient) and no_new_privs, with
// util-linux's setpriv. A test starting the speaker through it fails where
// the shipped pod would for want of a capability.
func SpeakerCommand(bin string, args ...string) (string, []string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", nil, err
	}
	caps, err := SpeakerCapabilities(filepath.Join(root, "deploy"))
	if err != nil {
		return "", nil, err
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return "", nil, fmt.Errorf("setpriv (util-linux) is needed to run the speaker with the shipped capabilities: %w", err)
	}
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(c)
	}
	cmd := []string{"--reuid=0", "--regid=0", "--clear-groups", "--bounding-set=" + set, "--inh-caps=-all", "--no-new-privs", "--", bin}
	return setpriv, append(cmd, args...), nil
}

// CapabilityMask is the capability set holding caps (Kubernetes names).
func CapabilityMask(caps []string) (uint64, error) {
	var m uint64
	for _, c := range caps {
		bit, ok := capBits[strings.TrimPrefix(strings.ToUpper(c), "CAP_")]
		if !ok {
			return 0, fmt.Errorf("unknown capability %s", c)
		}
		m |= 1 << bit
	}
	return m, nil
}

// ProcessCapabilities reads the effective and bounding capability sets of
// process pid from /proc.
func ProcessCapabilities(pid int) (effective, bounding uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "CapEff" && key != "CapBnd") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
		}
		if key == "CapEff" {
			effective = v
		} else {
			bounding = v
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no CapEff or CapBnd", pid)
	}
	return effective, bounding, nil
}
