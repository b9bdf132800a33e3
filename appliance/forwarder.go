package appliance

import (
	"encoding/binary"
	"fmt"

	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/hashing"
	"github.com/weirlb/weir/packet"
)

// Verdict is what a worker does with a frame after Forward.
type Verdict uint8

// Verdicts.
const (
	VerdictDrop  Verdict = iota // recycle the frame; the reason was counted
	VerdictTX                   // transmit the output frame towards a backend
	VerdictReply                // transmit the output frame back to the client (ICMP too big)
)

func (v Verdict) String() string {
	switch v {
	case VerdictDrop:
		return "drop"
	case VerdictTX:
		return "tx"
	case VerdictReply:
		return "reply"
	}
	return fmt.Sprintf("verdict(%d)", v)
}

// Forwarder makes the per-packet decision for one worker: parse, find the
// VIP, find the flow's backend (flow table first, Maglev on a miss), and
// rewrite or encapsulate the frame in place. It owns the worker's flow table
// and counters. A Forwarder belongs to one goroutine; it takes no lock and
// allocates nothing per packet.
type Forwarder struct {
	snap   *Snapshot
	now    int64
	flows  *flows.Table
	parsed packet.Parsed // Forward's
	batch  *batchState   // ForwardBatch's
	c      Counters
	reals  []RealCounters // indexed by real slot
	// realIDs[slot] is the real the counters of that slot belong to; a slot
	// reused for another (VIP, backend) pair starts again from zero.
	realIDs []uint32
	ipID    uint16 // outer IPv4 ID for non-DF packets
}

// NewForwarder returns a forwarder with a flow table built from fc and
// per-real counters for up to maxReals reals (Registry.MaxReals).
func NewForwarder(fc flows.Config, maxReals int) (*Forwarder, error) {
	if maxReals < 1 || maxReals > MaxRealsLimit {
		return nil, fmt.Errorf("max reals %d out of range 1..%d", maxReals, MaxRealsLimit)
	}
	t, err := flows.New(fc)
	if err != nil {
		return nil, fmt.Errorf("flow table: %w", err)
	}
	return &Forwarder{flows: t, reals: make([]RealCounters, maxReals), realIDs: make([]uint32, maxReals), batch: new(batchState)}, nil
}

// Close releases the flow table's memory (see flows.Table.Close). The
// forwarder must not be used afterwards.
func (f *Forwarder) Close() { f.flows.Close() }

// batchState holds what ForwardBatch learns in the first pass over a chunk.
type batchState struct {
	parsed [forwardChunk]packet.Parsed
	hash   [forwardChunk]uint64
}

// Begin starts a batch: the snapshot and the time (monotonic nanoseconds)
// hold for every frame until the next Begin. Call it once per batch.
func (f *Forwarder) Begin(s *Snapshot, now int64) {
	if s != f.snap {
		f.adopt(s)
	}
	f.now = now
}

// adopt switches to a new snapshot, resetting the counters of every real
// slot that now belongs to another pair (or to none). Snapshots of one
// registry never have fewer slots than earlier ones. It runs once per
// snapshot, not per packet.
func (f *Forwarder) adopt(s *Snapshot) {
	for slot := range min(len(s.reals), len(f.reals)) {
		if id := s.reals[slot].id; id != f.realIDs[slot] {
			f.reals[slot] = RealCounters{}
			f.realIDs[slot] = id
		}
	}
	f.snap = s
}

// Snapshot returns the snapshot of the current batch.
func (f *Forwarder) Snapshot() *Snapshot { return f.snap }

// Counters returns the worker's counters. Only the owning goroutine may call
// it while the worker runs.
func (f *Forwarder) Counters() *Counters { return &f.c }

// RealCounters returns the per-real counters, indexed by real slot. Only the
// owning goroutine may read them while the worker runs.
func (f *Forwarder) RealCounters() []RealCounters { return f.reals }

// Flows returns the worker's flow table (owner goroutine only).
func (f *Forwarder) Flows() *flows.Table { return f.flows }

// MaxBatch is the largest batch ForwardBatch takes.
const MaxBatch = 256

// forwardChunk is how many frames ForwardBatch parses, hashes and prefetches
// flow buckets for before deciding any. Enough for the flow-table misses of a
// chunk to overlap; few enough that the chunk's parsed headers, hashes and
// buckets are still in L1 when decide reads them (one pass over 256 frames
// of 10k flows took 37-44 ns a frame against 34 ns in chunks of 64).
const forwardChunk = 64

// Packet is one frame of a batch for ForwardBatch: the input is Buf (the
// whole UMEM frame, headroom included) with the packet at
// Buf[Start:Start+Len]; ForwardBatch fills in the verdict and, unless
// dropped, the bounds of the frame to transmit.
type Packet struct {
	Buf              []byte
	Start, Len       int
	Verdict          Verdict
	OutStart, OutLen int
}

// Forward decides the fate of the frame at buf[start:start+length]; the bytes
// in front of start are headroom that encapsulation may use. It returns the
// verdict and, unless dropped, the bounds of the frame to transmit, which may
// start before start. It writes nothing outside buf[:start+length].
// ForwardBatch makes the same decisions faster for many frames.
func (f *Forwarder) Forward(buf []byte, start, length int) (v Verdict, outStart, outLen int) {
	p := &f.parsed
	hash := f.classify(buf[start:start+length], p)
	pk := Packet{Buf: buf, Start: start, Len: length}
	return f.decide(&pk, p, hash)
}

// ForwardBatch forwards up to MaxBatch frames. It takes them in chunks of up
// to forwardChunk: it parses and hashes a chunk first and touches each flow's
// bucket before deciding any, so that the flow-table misses of a chunk
// overlap instead of stalling one after another.
func (f *Forwarder) ForwardBatch(pkts []Packet) {
	if len(pkts) > MaxBatch {
		panic("appliance: batch larger than MaxBatch")
	}
	for len(pkts) > forwardChunk {
		f.forwardOneChunk(pkts[:forwardChunk])
		pkts = pkts[forwardChunk:]
	}
	f.forwardOneChunk(pkts)
}

// forwardOneChunk is ForwardBatch for at most forwardChunk frames.
func (f *Forwarder) forwardOneChunk(pkts []Packet) {
	ps := f.batch
	var seed uint64
	if f.snap != nil {
		seed = f.snap.seed
	}
	for i := range pkts {
		// classify, written out: a call per packet costs more than the
		// checks it makes.
		pk := &pkts[i]
		p := &ps.parsed[i]
		packet.Parse(pk.Buf[pk.Start:pk.Start+pk.Len], p)
		var hash uint64
		if p.Reason == packet.OK {
			hash = hashing.FlowHash(&p.Key, seed)
		}
		ps.hash[i] = hash
	}
	// A tight loop of independent loads keeps many misses in flight at
	// once; interleaved with parsing, only one or two would be.
	f.flows.PrefetchAll(ps.hash[:len(pkts)])
	for i := range pkts {
		pk := &pkts[i]
		pk.Verdict, pk.OutStart, pk.OutLen = f.decide(pk, &ps.parsed[i], ps.hash[i])
	}
}

// classify parses a frame into p and returns its flow hash (0 if the frame
// did not parse).
func (f *Forwarder) classify(frame []byte, p *packet.Parsed) uint64 {
	packet.Parse(frame, p)
	if p.Reason != packet.OK {
		return 0
	}
	return hashing.FlowHash(&p.Key, f.snap.seed)
}

// decide finishes a classified frame, pk's input fields: flow table, VIP,
// Maglev, rewrite. It takes the packet by pointer so that fewer values live
// across the flow-table call.
func (f *Forwarder) decide(pk *Packet, p *packet.Parsed, hash uint64) (v Verdict, outStart, outLen int) {
	c := &f.c
	c.RXPackets++
	c.RXBytes += uint64(pk.Len)
	if p.Reason != packet.OK {
		return f.drop(DropReason(p.Reason))
	}
	s := f.snap

	// An established flow names its real, and the real its VIP: a hit
	// needs no VIP lookup. The flow key holds the VIP's address, protocol
	// and port, so an entry can only ever match packets of that VIP.
	var r *realState
	var vip *vipState
	moved := false
	if id, hit := f.flows.Lookup(&p.Key, hash, f.now); hit {
		if slot := id & realSlotMask; int(slot) < len(s.reals) {
			if cand := &s.reals[slot]; cand.id == id && cand.usable {
				r = cand
				vip = cand.vs
			}
		}
		moved = r == nil
	}
	if vip == nil {
		var vi int32
		var ok bool
		if p.Fragment {
			vi, ok = s.fragIndex.lookup(&p.Key, 0)
		} else {
			vi, ok = s.vipIndex.lookup(&p.Key, p.Key.DstPort)
			if !ok {
				vi, ok = s.vipIndex.lookup(&p.Key, 0)
			}
		}
		if !ok {
			return f.drop(f.unknownVIP(p))
		}
		vip = &s.vips[vi]
	}
	if p.ICMPError && vip.ICMPErrors == ICMPDrop {
		// The policy costs a byte compare, and only ICMP errors pay it.
		return f.drop(DropICMPError)
	}
	if r == nil {
		i := vip.maglev.Lookup(hash)
		if i < 0 {
			return f.drop(DropNoBackend)
		}
		id := vip.maglevReals[i]
		r = &s.reals[id&realSlotMask]
		if moved {
			c.FlowsMoved++
		}
		// ICMP errors follow a flow but do not start one.
		if !p.ICMPError {
			c.NewFlows++
			f.reals[id&realSlotMask].NewFlows++
			if f.flows.Insert(&p.Key, hash, id, f.now) == flows.RateLimited {
				c.NotRemembered++
			}
		}
	} else {
		c.FlowHits++
	}
	if p.Fragment {
		c.Fragments++
	}
	if p.ICMPError {
		c.ICMPErrors++
	}

	switch vip.Mode {
	case ModeDSR:
		outStart, outLen = pk.Start, pk.Len
		// Both MACs at once, from the real; the EtherType and any VLAN
		// tags stay.
		*(*[12]byte)(pk.Buf[outStart : outStart+12]) = [12]byte(r.eth[:12])
	default:
		v, outStart, outLen = f.encapsulate(pk.Buf, pk.Start, p, vip, r, hash)
		if v != VerdictTX {
			return v, outStart, outLen
		}
	}
	c.TXPackets++
	c.TXBytes += uint64(outLen)
	rc := &f.reals[r.id&realSlotMask]
	rc.Packets++
	rc.Bytes += uint64(outLen)
	return VerdictTX, outStart, outLen
}

func (f *Forwarder) drop(r DropReason) (Verdict, int, int) {
	f.c.Drops[r]++
	return VerdictDrop, 0, 0
}

// unknownVIP tells a packet to an address that is no VIP from one to a VIP
// address with another protocol or port. It runs on the drop path only.
func (f *Forwarder) unknownVIP(p *packet.Parsed) DropReason {
	k := &p.Key
	var a [17]byte
	a[0] = k.Family
	if k.Family == 4 {
		copy(a[1:], k.Dst[:4])
	} else {
		copy(a[1:], k.Dst[:])
	}
	if _, ok := f.snap.addrs[a]; ok {
		return DropUnsupported
	}
	return DropUnknownVIP
}

// encapsulate puts the outer headers of vip's mode in front of the IP packet,
// or handles a packet that would not fit the VIP's MTU.
func (f *Forwarder) encapsulate(buf []byte, start int, p *packet.Parsed, vip *vipState, r *realState, hash uint64) (Verdict, int, int) {
	hdrLen := int(r.encapLen)
	total := hdrLen + int(p.IPLen) // from the outer IP header on
	if total > vip.mtu {
		return f.tooBig(buf, start, p, vip, hdrLen)
	}
	if start < hdrLen {
		return f.drop(DropNoHeadroom)
	}
	if r.family != 4 {
		return f.encapsulate6(buf, start, p, vip, r, hash, total)
	}
	if p.L3Off != packet.EthernetLen {
		// VLAN tags, rarer, take the general path, so that the common one
		// here keeps few values across calls.
		return f.encapsulateAny(buf, start, p, vip, r, hash, total)
	}
	// An untagged frame with an outer IPv4 header: the whole Ethernet
	// header comes from r, and each header is written in a few whole-word
	// stores with nothing computed that the snapshot already knows.
	ns := start - hdrLen
	*(*[packet.EthernetLen]byte)(buf[ns:]) = r.eth
	var id, flags uint16
	if p.DF {
		flags = packet.IPv4FlagDF
	} else {
		f.ipID++
		id = f.ipID
	}
	src := r.src4
	if vip.srcPrefix {
		src = craft4(vip, hash)
	}
	w0, w1, w2 := packet.IPv4HeaderWords(p.TOS, uint16(total), id, flags, packet.DefaultTTL, r.outerProto)
	packet.PutIPv4HeaderWords((*[packet.IPv4MinLen]byte)(buf[ns+packet.EthernetLen:]), w0, w1, w2, uint64(src), uint64(r.dst4))
	if vip.Mode == ModeGUE {
		// GUE. A zero UDP checksum is allowed over IPv4 (RFC 768) and saves
		// a pass over the whole packet.
		packet.PutUDPHeader((*[packet.UDPLen]byte)(buf[ns+packet.EthernetLen+packet.IPv4MinLen:]),
			gueSourcePort(hash), vip.gueport, uint16(total-packet.IPv4MinLen), 0)
	}
	return VerdictTX, ns, packet.EthernetLen + total
}

// encapsulateAny is encapsulate for any L2 header and an outer IPv4 header;
// total is the length of the packet from the outer header on.
func (f *Forwarder) encapsulateAny(buf []byte, start int, p *packet.Parsed, vip *vipState, r *realState, hash uint64, total int) (Verdict, int, int) {
	l2Len := int(p.L3Off)
	ipLen := int(p.IPLen)
	extra := int(r.encapLen) - packet.IPv4MinLen // the UDP header for GUE
	proto := r.outerProto
	s := f.snap
	src := s.local4
	if vip.srcPrefix {
		binary.BigEndian.PutUint32(src[:], craft4(vip, hash))
	}
	var id uint16
	if !p.DF {
		f.ipID++
		id = f.ipID
	}
	ns := packet.EncapIPv4(buf, start, l2Len, ipLen, extra, proto, p.TOS, p.DF, id, src, r.addr4)
	if extra != 0 {
		packet.WriteUDPHeader(buf[ns+l2Len+packet.IPv4MinLen:], gueSourcePort(hash), vip.gueport, uint16(extra+ipLen), 0)
	}
	eth := packet.Ethernet(buf[ns:])
	eth.SetDst(r.mac)
	eth.SetSrc(s.localMAC)
	return VerdictTX, ns, l2Len + total
}

// encapsulate6 is encapsulate for a real with an IPv6 address; total is the
// length of the packet from the outer header on.
func (f *Forwarder) encapsulate6(buf []byte, start int, p *packet.Parsed, vip *vipState, r *realState, hash uint64, total int) (Verdict, int, int) {
	s := f.snap
	l2Len := int(p.L3Off)
	ipLen := int(p.IPLen)
	extra := int(r.encapLen) - packet.IPv6Len // the UDP header for GUE
	src := s.local6
	if vip.srcPrefix {
		src = craft6(vip, hash)
	}
	flow := uint32(hash) & 0xfffff
	var ns int
	if l2Len == packet.EthernetLen {
		// Untagged: the whole Ethernet header comes from r.
		ns = start - int(r.encapLen)
		*(*[packet.EthernetLen]byte)(buf[ns:]) = r.eth
		packet.WriteIPv6Header(buf[ns+packet.EthernetLen:], p.TOS, flow, uint16(extra+ipLen), r.outerProto, packet.DefaultTTL, &src, &r.addr6)
	} else {
		ns = packet.EncapIPv6(buf, start, l2Len, ipLen, extra, r.outerProto, p.TOS, flow, &src, &r.addr6)
		eth := packet.Ethernet(buf[ns:])
		eth.SetDst(r.mac)
		eth.SetSrc(s.localMAC)
	}
	if vip.Mode == ModeGUE {
		// IPv6 requires a UDP checksum (RFC 8200 section 8.1). The inner
		// packet's sum comes from its headers and its own checksum where
		// that is sound, instead of from every byte of it.
		u := buf[ns+l2Len+packet.IPv6Len:]
		udpLen := extra + ipLen
		packet.WriteUDPHeader(u, gueSourcePort(hash), vip.gueport, uint16(udpLen), 0)
		var sum uint32
		if vip.srcPrefix {
			sum = uint32(packet.PseudoHeaderSum(src[:], r.addr6[:], packet.ProtoUDP, uint32(udpLen)))
		} else {
			sum = uint32(r.addrSum6) + packet.ProtoUDP + uint32(udpLen) // udpLen < 2^16
		}
		var ck uint16
		if inner, ok := packet.EncapsulatedSum(u[packet.UDPLen:udpLen], p); ok {
			ck = packet.Finish(packet.Checksum(u[:packet.UDPLen], sum+uint32(inner)))
		} else {
			ck = packet.Finish(packet.Checksum(u[:udpLen], sum))
		}
		if ck == 0 {
			ck = 0xffff
		}
		packet.UDP(u).SetChecksum(ck)
	}
	return VerdictTX, ns, l2Len + total
}

// tooBig handles a packet that would not fit the VIP's MTU once overhead
// bytes of outer headers are added: an ICMP "too big" reply to the client
// when the VIP asks for one and the packet may not be fragmented, a drop
// otherwise.
func (f *Forwarder) tooBig(buf []byte, start int, p *packet.Parsed, vip *vipState, overhead int) (Verdict, int, int) {
	if vip.TooBig == TooBigICMP && p.DF && !p.ICMPError {
		if start < packet.IPv6Len+packet.ICMPHeaderLen {
			return f.drop(DropNoHeadroom)
		}
		ns, n := packet.WriteICMPTooBig(buf, start, p, uint32(vip.mtu-overhead))
		packet.Ethernet(buf[ns:]).SetSrc(f.snap.localMAC)
		f.c.Replies++
		return VerdictReply, ns, n
	}
	return f.drop(DropTooBig)
}

// gueSourcePort spreads flows over the ephemeral port range (RFC 6335) so that
// receivers hashing the outer 5-tuple spread them over queues.
func gueSourcePort(hash uint64) uint16 { return 0xc000 | uint16(hash>>32)&0x3fff }

// craft4 returns an outer IPv4 source inside the VIP's source prefix whose
// host bits come from the flow hash, as a big-endian integer.
func craft4(v *vipState, hash uint64) uint32 {
	h := uint32(hash) ^ uint32(hash>>32)
	return binary.BigEndian.Uint32(v.srcBase[:4]) | h&binary.BigEndian.Uint32(v.srcHostMask[:4])
}

// craft6 is craft4 for IPv6.
func craft6(v *vipState, hash uint64) [16]byte {
	var a [16]byte
	hi := binary.BigEndian.Uint64(v.srcBase[0:8]) | bitsMix(hash)&binary.BigEndian.Uint64(v.srcHostMask[0:8])
	lo := binary.BigEndian.Uint64(v.srcBase[8:16]) | hash&binary.BigEndian.Uint64(v.srcHostMask[8:16])
	binary.BigEndian.PutUint64(a[0:8], hi)
	binary.BigEndian.PutUint64(a[8:16], lo)
	return a
}

func bitsMix(h uint64) uint64 { return (h ^ h>>31) * 0xbf58476d1ce4e5b9 }
