package appliance

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/weirlb/weir/hashing"
	"github.com/weirlb/weir/packet"
)

// Snapshot is an immutable, ready-to-use form of a Model: VIP lookup tables,
// Maglev tables and per-real forwarding data. The control plane builds one off
// the hot path and publishes it with an atomic pointer; workers load the
// pointer once per batch and never see a half-built snapshot. Nothing in a
// published snapshot is ever written again.
type Snapshot struct {
	Generation uint64
	Model      Model // what the snapshot was built from (for reports)

	localMAC packet.MAC
	local4   [4]byte
	local6   [16]byte
	seed     uint64

	vips     []vipState
	vipIndex vipTable // (family, address, protocol, port) → index in vips
	// fragIndex maps (family, address, protocol) to the VIP that owns
	// fragments, which carry no ports beyond the first: the all-ports VIP of
	// that address and protocol if there is one, else the one with the lowest
	// port. Every fragment of a datagram, first included, goes there.
	fragIndex vipTable
	// addrs holds every VIP address, to tell "unknown VIP" from
	// "unsupported protocol" on the drop path only.
	addrs map[[17]byte]struct{}

	reals []realState // indexed by real slot
}

type vipState struct {
	VIP
	family      uint8
	addr4       [4]byte
	addr6       [16]byte
	maglev      *hashing.Table
	maglevReals []uint32 // real ID of each Maglev backend, in the order given to the table
	mtu         int
	gueport     uint16
	srcPrefix   bool
	srcBase     [16]byte // SourcePrefix address
	srcHostMask [16]byte // bits of the outer source that vary per flow
}

type realState struct {
	id uint32 // full real ID (tag and slot); 0 = slot unused in this snapshot
	// vs is its VIP, an element of Snapshot.vips (a pointer rather than an
	// index: a flow-table hit then loads it instead of scaling an index by
	// the size of a vipState).
	vs     *vipState
	usable bool // may carry traffic: present, not failed, next hop known
	family uint8
	addr4  [4]byte
	addr6  [16]byte
	mac    packet.MAC
	name   string

	// What the forwarder writes for this real, worked out once per snapshot
	// rather than per packet.
	//
	// eth is the untagged Ethernet header of frames to it: its MAC, the
	// appliance's MAC and the EtherType of the outer header (encapsulating
	// VIPs; DSR uses only the addresses). encapLen is the length of the outer
	// headers (0 for DSR), outerProto the outer IPv4 protocol or IPv6 next
	// header, and src4 and dst4 the outer IPv4 addresses as big-endian
	// integers (src4 unless the VIP crafts sources per flow). addrSum6 is the
	// ones'-complement sum of the outer IPv6 source and destination, the
	// part of GUE's pseudo header that does not change (unless the VIP
	// crafts sources).
	eth        [packet.EthernetLen]byte
	encapLen   uint8
	outerProto uint8
	src4, dst4 uint32
	addrSum6   uint16
}

// Errors that snapshot building reports wrapped with context.
var (
	ErrDuplicateVIP     = errors.New("duplicate VIP")
	ErrDuplicateBackend = errors.New("duplicate backend")
)

// BuildSnapshot validates m and turns it into a snapshot with the given
// generation number, taking real IDs from reg. It fails, leaving reg
// unchanged, on any inconsistency.
func BuildSnapshot(m Model, reg *Registry, generation uint64) (*Snapshot, error) {
	s := &Snapshot{
		Generation: generation,
		Model:      m,
		localMAC:   m.LocalMAC,
		seed:       m.FlowSeed,
		addrs:      make(map[[17]byte]struct{}),
	}
	if s.seed == 0 {
		s.seed = hashing.DefaultFlowSeed
	}
	if m.LocalAddr4.IsValid() {
		if !m.LocalAddr4.Is4() {
			return nil, fmt.Errorf("local IPv4 address %s is not IPv4", m.LocalAddr4)
		}
		s.local4 = m.LocalAddr4.As4()
	}
	if m.LocalAddr6.IsValid() {
		if !m.LocalAddr6.Is6() || m.LocalAddr6.Is4In6() {
			return nil, fmt.Errorf("local IPv6 address %s is not IPv6", m.LocalAddr6)
		}
		s.local6 = m.LocalAddr6.As16()
	}

	if err := m.Validate(); err != nil {
		return nil, err
	}
	// Maglev tables first: every error is found before the registry changes.
	var keys []realKey
	s.vips = make([]vipState, len(m.VIPs))
	for i := range m.VIPs {
		v := &m.VIPs[i]
		vs := &s.vips[i]
		var mag []hashing.Backend
		for _, b := range v.Backends {
			keys = append(keys, realKey{v.VIPKey, b.Addr})
			if b.State == StateActive && b.Weight > 0 && b.MAC != (packet.MAC{}) {
				mag = append(mag, hashing.Backend{ID: b.Addr.String(), Weight: b.Weight})
			}
		}
		var err error
		vs.maglev, err = hashing.NewTable(mag, cmp.Or(v.TableSize, hashing.DefaultTableSize))
		if err != nil {
			return nil, fmt.Errorf("vip %s: maglev: %w", v.VIPKey, err)
		}
	}
	ids, err := reg.assign(keys)
	if err != nil {
		return nil, err
	}
	s.reals = make([]realState, reg.slots())

	next := 0
	for i := range m.VIPs {
		v := &m.VIPs[i]
		vs := &s.vips[i]
		vs.VIP = *v
		vs.Backends = slices.Clone(v.Backends)
		vs.family = familyOf(v.Addr)
		if vs.family == 4 {
			vs.addr4 = v.Addr.As4()
		} else {
			vs.addr6 = v.Addr.As16()
		}
		vs.mtu = cmp.Or(v.MTU, DefaultMTU)
		vs.gueport = cmp.Or(v.GUEPort, DefaultGUEPort)
		if v.SourcePrefix.IsValid() {
			vs.srcPrefix = true
			p := v.SourcePrefix.Masked()
			vs.srcBase = p.Addr().As16()
			bitsLen := p.Addr().BitLen()
			host := bitsLen - p.Bits()
			// Host bits live at the end of the address (the last 4 bytes of
			// srcBase for IPv4, which stores the address in its first 4).
			for b := 0; b < host; b++ {
				byteIdx := bitsLen/8 - 1 - b/8
				vs.srcHostMask[byteIdx] |= 1 << (b % 8)
			}
			if bitsLen == 32 {
				copy(vs.srcBase[:4], vs.srcBase[12:16])
			}
		}
		for _, b := range v.Backends {
			id := ids[next]
			next++
			r := &s.reals[id&realSlotMask]
			r.id = id
			r.vs = vs
			r.family = familyOf(b.Addr)
			if r.family == 4 {
				r.addr4 = b.Addr.As4()
			} else {
				r.addr6 = b.Addr.As16()
			}
			r.mac = b.MAC
			r.name = cmp.Or(b.Name, b.Addr.String())
			r.setOuter(vs, s)
			r.usable = b.State != StateFailed && b.MAC != (packet.MAC{})
			if r.usable && b.State == StateActive && b.Weight > 0 {
				// Same order as the backends given to NewTable above.
				vs.maglevReals = append(vs.maglevReals, id)
			}
		}
		s.addrs[addrKey(v.Addr)] = struct{}{}
	}
	s.buildIndexes()
	return s, nil
}

// setOuter works out the headers the forwarder puts on r's packets from
// r's address and MAC, its VIP v and the snapshot's local addresses.
func (r *realState) setOuter(v *vipState, s *Snapshot) {
	*(*packet.MAC)(r.eth[0:6]) = r.mac
	*(*packet.MAC)(r.eth[6:12]) = s.localMAC
	etherType := uint16(packet.EtherTypeIPv4)
	outer := packet.IPv4MinLen
	if r.family == 6 {
		etherType, outer = packet.EtherTypeIPv6, packet.IPv6Len
	}
	binary.BigEndian.PutUint16(r.eth[12:14], etherType)
	switch v.Mode {
	case ModeIPIP:
		r.encapLen, r.outerProto = uint8(outer), packet.InnerProto(v.family)
	case ModeGUE:
		r.encapLen, r.outerProto = uint8(outer+packet.UDPLen), packet.ProtoUDP
	}
	r.src4 = binary.BigEndian.Uint32(s.local4[:])
	r.dst4 = binary.BigEndian.Uint32(r.addr4[:])
	if r.family == 6 {
		r.addrSum6 = packet.PseudoHeaderSum(s.local6[:], r.addr6[:], 0, 0)
	}
}

// usable reports whether a backend may carry traffic: its established flows
// stay on it. A failed backend or one whose next hop is unknown carries none.
func usable(b *Backend) bool { return b.State != StateFailed && b.MAC != (packet.MAC{}) }

// takesNewFlows reports whether Maglev gives a backend new flows: usable,
// not draining, and with weight.
func takesNewFlows(b *Backend) bool { return usable(b) && b.State == StateActive && b.Weight > 0 }

// Validate checks the model for everything BuildSnapshot would refuse,
// except the registry's capacity.
func (m Model) Validate() error {
	seen := make(map[VIPKey]bool, len(m.VIPs))
	for i := range m.VIPs {
		v := &m.VIPs[i]
		if err := checkVIP(v, m); err != nil {
			return fmt.Errorf("vip %s: %w", v.VIPKey, err)
		}
		if seen[v.VIPKey] {
			return fmt.Errorf("vip %s: %w", v.VIPKey, ErrDuplicateVIP)
		}
		seen[v.VIPKey] = true
	}
	return nil
}

func checkVIP(v *VIP, m Model) error {
	if !v.Addr.IsValid() || v.Addr.Is4In6() || v.Addr.Zone() != "" {
		return fmt.Errorf("address %v must be a plain IPv4 or IPv6 address", v.Addr)
	}
	if v.Proto != packet.ProtoTCP && v.Proto != packet.ProtoUDP {
		return fmt.Errorf("protocol %d: want tcp (6) or udp (17)", v.Proto)
	}
	if v.Mode > ModeGUE {
		return fmt.Errorf("unknown mode %d", v.Mode)
	}
	if v.TableSize != 0 {
		if err := hashing.ValidateTableSize(v.TableSize); err != nil {
			return err
		}
	}
	if v.MTU != 0 && (v.MTU < 576 || v.MTU > 9216) {
		return fmt.Errorf("mtu %d out of range 576..9216", v.MTU)
	}
	if v.TooBig > TooBigICMP {
		return fmt.Errorf("unknown too-big policy %d", v.TooBig)
	}
	if v.ICMPErrors > ICMPDrop {
		return fmt.Errorf("unknown ICMP error policy %d", v.ICMPErrors)
	}
	if v.SourcePrefix.IsValid() && v.Mode == ModeDSR {
		return errors.New("source prefix applies only to ipip and gue")
	}
	seen := make(map[netip.Addr]bool, len(v.Backends))
	for _, b := range v.Backends {
		if !b.Addr.IsValid() || b.Addr.Is4In6() || b.Addr.Zone() != "" {
			return fmt.Errorf("backend address %v must be a plain IPv4 or IPv6 address", b.Addr)
		}
		if seen[b.Addr] {
			return fmt.Errorf("backend %s: %w", b.Addr, ErrDuplicateBackend)
		}
		seen[b.Addr] = true
		if b.State > StateFailed {
			return fmt.Errorf("backend %s: unknown state %d", b.Addr, b.State)
		}
		switch v.Mode {
		case ModeDSR:
			if b.Addr.Is4() != v.Addr.Is4() {
				return fmt.Errorf("backend %s: dsr needs backends of the VIP's address family", b.Addr)
			}
		default:
			switch {
			case v.SourcePrefix.IsValid():
				if v.SourcePrefix.Addr().Is4() != b.Addr.Is4() {
					return fmt.Errorf("backend %s: source prefix %s is of another address family", b.Addr, v.SourcePrefix)
				}
			case b.Addr.Is4() && !m.LocalAddr4.IsValid():
				return fmt.Errorf("backend %s: encapsulating to IPv4 needs the appliance's IPv4 address (or a source prefix)", b.Addr)
			case b.Addr.Is6() && !m.LocalAddr6.IsValid():
				return fmt.Errorf("backend %s: encapsulating to IPv6 needs the appliance's IPv6 address (or a source prefix)", b.Addr)
			}
		}
	}
	return nil
}

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return 4
	}
	return 6
}

func addrKey(a netip.Addr) [17]byte {
	var k [17]byte
	k[0] = familyOf(a)
	if k[0] == 4 {
		a4 := a.As4()
		copy(k[1:], a4[:])
	} else {
		a16 := a.As16()
		copy(k[1:], a16[:])
	}
	return k
}

// buildIndexes fills the VIP lookup tables.
func (s *Snapshot) buildIndexes() {
	s.vipIndex.init(len(s.vips))
	s.fragIndex.init(len(s.vips))
	for i := range s.vips {
		v := &s.vips[i]
		k := keyOfVIP(v, v.Port)
		s.vipIndex.insert(k, int32(i))
		fk := keyOfVIP(v, 0)
		if j, ok := s.fragIndex.get(fk); ok {
			cur := &s.vips[j]
			if cur.Port == 0 || (v.Port != 0 && cur.Port < v.Port) {
				continue
			}
		}
		s.fragIndex.insert(fk, int32(i))
	}
}

func keyOfVIP(v *vipState, port uint16) packet.FlowKey {
	var k packet.FlowKey
	k.Family = v.family
	k.Proto = v.Proto
	k.DstPort = port
	if v.family == 4 {
		copy(k.Dst[:4], v.addr4[:])
	} else {
		k.Dst = v.addr6
	}
	return k
}

// vipTable is an open-addressing hash table from the destination side of a
// flow key (family, address, protocol, port) to a VIP index. It is built once
// per snapshot and read by the workers without allocation: a Go map lookup
// costs several times more on the per-packet path.
type vipTable struct {
	keys  []vipTableKey
	vals  []int32
	mask  uint64
	count int
}

type vipTableKey struct {
	hi, lo uint64 // destination address
	rest   uint64 // family<<32 | proto<<16 | port, plus 1<<63 for an occupied slot
}

func (t *vipTable) init(n int) {
	size := 1 << bits.Len(uint(n*2+1)) // load factor at most 1/2
	t.keys = make([]vipTableKey, size)
	t.vals = make([]int32, size)
	t.mask = uint64(size - 1)
}

func vipKeyOf(k *packet.FlowKey, port uint16) vipTableKey {
	return vipTableKey{
		hi:   binary.LittleEndian.Uint64(k.Dst[0:8]),
		lo:   binary.LittleEndian.Uint64(k.Dst[8:16]),
		rest: 1<<63 | uint64(k.Family)<<32 | uint64(k.Proto)<<16 | uint64(port),
	}
}

func (k vipTableKey) hash() uint64 {
	h := (k.hi ^ bits.RotateLeft64(k.lo, 29) ^ bits.RotateLeft64(k.rest, 47)) * 0x9e3779b97f4a7c15
	return h ^ h>>32
}

func (t *vipTable) insert(fk packet.FlowKey, v int32) {
	k := vipKeyOf(&fk, fk.DstPort)
	for i := k.hash() & t.mask; ; i = (i + 1) & t.mask {
		if t.keys[i].rest == 0 || t.keys[i] == k {
			if t.keys[i].rest == 0 {
				t.count++
			}
			t.keys[i] = k
			t.vals[i] = v
			return
		}
	}
}

func (t *vipTable) get(fk packet.FlowKey) (int32, bool) {
	return t.lookup(&fk, fk.DstPort)
}

// lookup finds the VIP for the destination of k with the given port.
func (t *vipTable) lookup(k *packet.FlowKey, port uint16) (int32, bool) {
	want := vipKeyOf(k, port)
	for i := want.hash() & t.mask; ; i = (i + 1) & t.mask {
		got := &t.keys[i]
		if got.rest == 0 {
			return -1, false
		}
		if *got == want {
			return t.vals[i], true
		}
	}
}
