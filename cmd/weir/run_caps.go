package main

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// capability is one Linux capability `weir run` needs, and what for.
type capability struct {
	bit  int
	name string
	why  string
	// alt, if non-zero, is an older, broader capability the kernel accepts
	// instead (CAP_SYS_ADMIN for CAP_BPF on every kernel that has CAP_BPF).
	alt int
}

// requiredCaps are the capabilities weir run needs in its effective set, as
// found by running it without each (see run_caps_test.go). CAP_IPC_LOCK is
// not here: it is one of two ways to let the UMEM be locked (checkMemlock).
var requiredCaps = []capability{
	{bit: unix.CAP_NET_ADMIN, name: "CAP_NET_ADMIN", why: "load an XDP program, attach it to the interface, probe neighbours"},
	{bit: unix.CAP_BPF, name: "CAP_BPF", why: "create BPF maps and load the redirect program", alt: unix.CAP_SYS_ADMIN},
	{bit: unix.CAP_NET_RAW, name: "CAP_NET_RAW", why: "open AF_XDP sockets"},
	// Without it the verifier applies its Spectre v1 hardening and rejects
	// the redirect program's packet-pointer arithmetic with a variable
	// offset ("pointer arithmetic with it prohibited for !root").
	{bit: unix.CAP_PERFMON, name: "CAP_PERFMON", why: "have the redirect program verified without the Spectre v1 restrictions it needs lifted (variable packet offsets)", alt: unix.CAP_SYS_ADMIN},
}

// capSet is a process's effective capability set.
type capSet [2]uint32

func (s capSet) has(bit int) bool { return s[bit/32]&(1<<(bit%32)) != 0 }

func effectiveCaps() (capSet, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return capSet{}, fmt.Errorf("capget: %w", err)
	}
	return capSet{data[0].Effective, data[1].Effective}, nil
}

// missingCapabilities lists the required capabilities this process lacks.
func missingCapabilities() []capability {
	have, err := effectiveCaps()
	if err != nil {
		return nil
	}
	var missing []capability
	for _, c := range requiredCaps {
		if !have.has(c.bit) && (c.alt == 0 || !have.has(c.alt)) {
			missing = append(missing, c)
		}
	}
	return missing
}

// checkCapabilities fails, saying what to grant, if this process lacks a
// capability weir needs: without the check the kernel would answer
// "operation not permitted" from somewhere deep in the start-up.
func checkCapabilities() error {
	if _, err := effectiveCaps(); err != nil {
		return err
	}
	missing := missingCapabilities()
	if len(missing) == 0 {
		return nil
	}
	var names []string
	for _, c := range missing {
		names = append(names, c.name)
	}
	what := "capability"
	if len(missing) > 1 {
		what = "capabilities"
	}
	return fmt.Errorf("missing %s %s\n%s", what, strings.Join(names, ", "), capabilityAdvice(missing))
}

// capabilityAdvice says what each missing capability is for and how to
// grant them.
func capabilityAdvice(missing []capability) string {
	var b strings.Builder
	for _, c := range missing {
		fmt.Fprintf(&b, "  %s is needed to %s\n", c.name, c.why)
	}
	b.WriteString("Run weir as root, or grant the capabilities: under systemd, deploy/weir.service sets\n" +
		"  AmbientCapabilities=CAP_NET_ADMIN CAP_BPF CAP_PERFMON CAP_NET_RAW CAP_IPC_LOCK and LimitMEMLOCK=infinity;\n" +
		"by hand: setcap cap_net_admin,cap_bpf,cap_perfmon,cap_net_raw,cap_ipc_lock+ep \"$(command -v weir)\"")
	return b.String()
}

// checkMemlock makes sure the UMEM can be registered: the kernel charges it
// to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK, and the default
// limit (8 MiB) is far too small. It raises the soft limit to the hard one
// first.
func checkMemlock() error {
	have, err := effectiveCaps()
	if err != nil {
		return err
	}
	if have.has(unix.CAP_IPC_LOCK) {
		return nil
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return fmt.Errorf("getrlimit memlock: %w", err)
	}
	if lim.Max == unix.RLIM_INFINITY {
		return nil
	}
	return fmt.Errorf("RLIMIT_MEMLOCK is limited to %s and the process lacks CAP_IPC_LOCK: the AF_XDP frame areas cannot be locked.\n"+
		"Set LimitMEMLOCK=infinity in the systemd unit (ulimit -l unlimited in a shell), or grant CAP_IPC_LOCK", byteSize(lim.Max))
}

func byteSize(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
