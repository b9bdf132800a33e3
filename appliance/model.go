package appliance

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/weirlb/weir/packet"
)

// Mode is how a VIP's packets reach its backends.
type Mode uint8

// Forwarding modes.
const (
	ModeDSR  Mode = iota // L2 direct server return: MACs rewritten, IP packet untouched
	ModeIPIP             // IP-in-IP: IPv4 protocol 4 / IPv6 next header 41
	ModeGUE              // GUE variant 1: outer IP + UDP, inner IP right after the UDP header
)

var modeNames = [...]string{ModeDSR: "dsr", ModeIPIP: "ipip", ModeGUE: "gue"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", m)
}

// ParseMode parses "dsr", "ipip" or "gue".
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("unknown forwarding mode %q (want dsr, ipip or gue)", s)
}

// BackendState is a backend's administrative or health state.
type BackendState uint8

// Backend states. A draining backend keeps its established flows and gets no
// new ones; a failed backend's flows move to the Maglev choice.
const (
	StateActive BackendState = iota
	StateDraining
	StateFailed
)

var stateNames = [...]string{StateActive: "active", StateDraining: "draining", StateFailed: "failed"}

func (s BackendState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", s)
}

// ParseBackendState parses "active", "draining" or "failed".
func ParseBackendState(s string) (BackendState, error) {
	for i, n := range stateNames {
		if n == s {
			return BackendState(i), nil
		}
	}
	return 0, fmt.Errorf("unknown backend state %q (want active, draining or failed)", s)
}

// TooBigPolicy says what happens to a packet that would exceed the VIP's MTU
// once encapsulated.
type TooBigPolicy uint8

// Too-big policies.
const (
	TooBigDrop TooBigPolicy = iota // drop and count
	TooBigICMP                     // answer with ICMP frag-needed / packet-too-big (DF packets), so the client lowers its MTU
)

// ICMPPolicy says what happens to ICMP errors about a VIP's flows: ICMPv4
// destination-unreachable (fragmentation needed among them), time-exceeded
// and parameter-problem, and ICMPv6 packet-too-big and the like, sent to the
// VIP by routers on the way from a backend to a client.
type ICMPPolicy uint8

// ICMP error policies.
const (
	// ICMPForward sends each error to the backend owning the flow it
	// quotes, so the backend's stack learns a smaller path MTU (or that
	// the client is unreachable). Without it, path MTU discovery on the
	// return path fails and large replies stall.
	ICMPForward ICMPPolicy = iota
	// ICMPDrop drops them, counted under DropICMPError: for operators whose
	// border already answers for the VIPs, or to show what forwarding buys.
	ICMPDrop
)

var icmpPolicyNames = [...]string{ICMPForward: "forward", ICMPDrop: "drop"}

func (p ICMPPolicy) String() string {
	if int(p) < len(icmpPolicyNames) {
		return icmpPolicyNames[p]
	}
	return fmt.Sprintf("icmp_policy(%d)", p)
}

// ParseICMPPolicy parses "forward" or "drop".
func ParseICMPPolicy(s string) (ICMPPolicy, error) {
	for i, n := range icmpPolicyNames {
		if n == s {
			return ICMPPolicy(i), nil
		}
	}
	return 0, fmt.Errorf("unknown ICMP error policy %q (want forward or drop)", s)
}

// Defaults for VIP fields left zero.
const (
	DefaultMTU     = 1500
	DefaultGUEPort = 5555
)

// VIPKey identifies a VIP: address, protocol and port (0 = all ports).
type VIPKey struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

func (k VIPKey) String() string {
	proto := "tcp"
	if k.Proto == packet.ProtoUDP {
		proto = "udp"
	}
	port := "*"
	if k.Port != 0 {
		port = fmt.Sprint(k.Port)
	}
	if k.Addr.Is6() {
		return fmt.Sprintf("%s/[%s]:%s", proto, k.Addr, port)
	}
	return fmt.Sprintf("%s/%s:%s", proto, k.Addr, port)
}

// VIP is one virtual service as the control plane describes it.
type VIP struct {
	VIPKey
	Name      string
	Mode      Mode
	TableSize uint32 // Maglev table size, prime; 0 = hashing.DefaultTableSize
	// MTU is the largest IP packet (outer header included) the path to the
	// backends carries; 0 = DefaultMTU. Only encapsulating modes can exceed it.
	MTU    int
	TooBig TooBigPolicy
	// ICMPErrors says whether ICMP errors about the VIP's flows reach the
	// flow's backend (the zero value) or are dropped. It applies in every
	// mode.
	ICMPErrors ICMPPolicy
	// GUEPort is the outer UDP destination port for ModeGUE; 0 = DefaultGUEPort.
	GUEPort uint16
	// SourcePrefix, when valid, makes the outer source address of
	// encapsulated packets vary per flow inside this prefix (so the backends'
	// NICs spread flows over their queues); otherwise the appliance's address
	// of the backend's family is used.
	SourcePrefix netip.Prefix
	// Health says how the appliance probes the VIP's backends; the zero
	// value (Type "") probes nothing, like HealthNone. A backend that fails
	// its check is forwarded to as if its State were StateFailed.
	Health   HealthConfig
	Backends []Backend
}

// HealthType is how backends of a VIP are probed.
type HealthType string

// Health check types.
const (
	HealthNone  HealthType = "none"  // no probing: backends keep their configured state
	HealthTCP   HealthType = "tcp"   // a TCP connection must be accepted
	HealthHTTP  HealthType = "http"  // an HTTP GET of Path must answer ExpectStatus
	HealthHTTPS HealthType = "https" // the same over TLS, certificate not verified (see health.go)
)

// HealthConfig is how a VIP's backends are health-checked: the [vip.health]
// table of the configuration. Zero fields of a model built in code take the
// Default* values of config.go (Timeout: the default, but at most Interval).
type HealthConfig struct {
	Type         HealthType
	Port         uint16 // port probed on each backend's address; 0: the VIP's port
	Path         string // http and https only
	ExpectStatus int    // http and https only
	Interval     time.Duration
	Timeout      time.Duration
	Rise         int // consecutive successes that bring a down backend up
	Fall         int // consecutive failures that take a backend down
}

// Backend is one server behind a VIP.
type Backend struct {
	Addr   netip.Addr
	Name   string // for reports; defaults to the address
	Weight uint32 // relative share of new flows; 0 drains the backend
	State  BackendState
	// MAC is the backend's MAC for DSR, or the next hop's MAC towards the
	// backend for encapsulating modes. A zero MAC means "not resolved": the
	// backend gets no traffic until the control plane resolves it.
	MAC packet.MAC
}

// Model is everything the forwarding decision needs, as plain values. The
// control plane builds it from the configuration file, health checks and
// next-hop resolution, and turns it into a Snapshot.
type Model struct {
	LocalMAC   packet.MAC // source MAC of every transmitted frame
	LocalAddr4 netip.Addr // outer IPv4 source for encapsulation (may be invalid if unused)
	LocalAddr6 netip.Addr // outer IPv6 source for encapsulation (may be invalid if unused)
	// FlowSeed seeds the flow hash. Appliances that must agree on flow
	// placement (ECMP peers) must use the same seed; zero means the default.
	FlowSeed uint64
	VIPs     []VIP
}

// FlowTimeouts are the idle timeouts of the per-worker flow tables.
type FlowTimeouts struct {
	TCP, UDP, Other time.Duration
}
