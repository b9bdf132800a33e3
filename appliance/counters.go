package appliance

import "github.com/weirlb/weir/packet"

// DropReason names why a frame was not forwarded. The first values are the
// parse reasons of package packet, so a parse failure maps to a drop reason
// without a table.
type DropReason uint8

// Drop reasons. Keep dropReasonNames in step.
const (
	DropTruncated    = DropReason(packet.ReasonTruncated)
	DropNotIP        = DropReason(packet.ReasonNotIP)
	DropTooManyVLANs = DropReason(packet.ReasonTooManyVLANs)
	DropBadVersion   = DropReason(packet.ReasonBadVersion)
	DropBadIHL       = DropReason(packet.ReasonBadIHL)
	DropBadLength    = DropReason(packet.ReasonBadLength)
	DropTTLExpired   = DropReason(packet.ReasonTTLExpired)
	DropBadExtHeader = DropReason(packet.ReasonBadExtHeader)
	DropBadICMP      = DropReason(packet.ReasonBadICMP)
)

// Drop reasons decided by the forwarder after parsing.
const (
	DropUnknownVIP  = DropReason(packet.NumReasons) + iota // no VIP has this address
	DropUnsupported                                        // the address is a VIP, but not for this protocol/port (ICMP echo, SCTP, another port)
	DropNoBackend                                          // the VIP has no backend that may take new flows
	DropTooBig                                             // too big for the VIP's MTU once encapsulated (and not answered with ICMP)
	DropNoHeadroom                                         // not enough room in front of the frame for the outer headers
	DropICMPError                                          // an ICMP error about a flow of a VIP whose policy is ICMPDrop
	NumDropReasons
)

var dropReasonNames = [NumDropReasons]string{
	DropUnknownVIP:  "unknown_vip",
	DropUnsupported: "unsupported_protocol",
	DropNoBackend:   "no_backend",
	DropTooBig:      "too_big",
	DropNoHeadroom:  "no_headroom",
	DropICMPError:   "icmp_error_dropped",
}

func init() {
	for r := packet.Reason(1); r < packet.NumReasons; r++ {
		dropReasonNames[r] = r.String()
	}
}

// String returns the reason's metric label.
func (r DropReason) String() string {
	if r > 0 && r < NumDropReasons {
		return dropReasonNames[r]
	}
	return "unknown"
}

// DropReasons lists every drop reason, for reports and metrics.
func DropReasons() []DropReason {
	out := make([]DropReason, 0, NumDropReasons-1)
	for r := DropReason(1); r < NumDropReasons; r++ {
		out = append(out, r)
	}
	return out
}

// Counters are one worker's totals. The worker that owns them is the only
// writer; other goroutines read a copy that the worker publishes (see
// Forwarder.Counters).
type Counters struct {
	RXPackets, RXBytes uint64 // frames given to Forward
	TXPackets, TXBytes uint64 // frames forwarded to a backend
	Replies            uint64 // ICMP too-big messages sent back to clients
	Drops              [NumDropReasons]uint64
	NewFlows           uint64 // flows chosen by Maglev (flow-table miss)
	FlowHits           uint64 // flows found in the flow table
	FlowsMoved         uint64 // table hits whose backend was gone or failed
	NotRemembered      uint64 // new flows not inserted because of the new-flow rate limit
	Fragments          uint64 // IP fragments forwarded
	ICMPErrors         uint64 // ICMP errors forwarded to the backend owning the quoted flow
}

// Add adds o to c.
func (c *Counters) Add(o *Counters) {
	c.RXPackets += o.RXPackets
	c.RXBytes += o.RXBytes
	c.TXPackets += o.TXPackets
	c.TXBytes += o.TXBytes
	c.Replies += o.Replies
	for i := range c.Drops {
		c.Drops[i] += o.Drops[i]
	}
	c.NewFlows += o.NewFlows
	c.FlowHits += o.FlowHits
	c.FlowsMoved += o.FlowsMoved
	c.NotRemembered += o.NotRemembered
	c.Fragments += o.Fragments
	c.ICMPErrors += o.ICMPErrors
}

// Dropped returns the total of all drop reasons.
func (c *Counters) Dropped() uint64 {
	var n uint64
	for _, d := range c.Drops {
		n += d
	}
	return n
}

// RealCounters count what one real (VIP, backend pair) was sent.
type RealCounters struct {
	Packets, Bytes uint64
	NewFlows       uint64 // flows Maglev sent to it (flow-table misses that started a flow)
}
