package appliance

import (
	"errors"
	"maps"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weirlb/weir/hashing"
	"github.com/weirlb/weir/packet"
)

// TestBuildSnapshotRejects checks that every inconsistency in a model is
// refused with an error that names it.
func TestBuildSnapshotRejects(t *testing.T) {
	base := func() Model {
		return semModel(vip("192.0.2.1", ipProtoTCP, 80, ModeIPIP, be("10.0.0.1", 1), be("fd00::1", 2)))
	}
	for _, tc := range []struct {
		name   string
		edit   func(m *Model)
		is     error  // wanted in the chain, if set
		substr string // wanted in the message
	}{
		{"duplicate VIP", func(m *Model) { m.VIPs = append(m.VIPs, m.VIPs[0]) }, ErrDuplicateVIP, "192.0.2.1:80"},
		{"duplicate backend", func(m *Model) { m.VIPs[0].Backends = append(m.VIPs[0].Backends, be("10.0.0.1", 3)) }, ErrDuplicateBackend, "10.0.0.1"},
		{"table size not prime", func(m *Model) { m.VIPs[0].TableSize = 65536 }, hashing.ErrInvalidTableSize, "65536"},
		{"table size too large", func(m *Model) { m.VIPs[0].TableSize = 16777259 }, hashing.ErrInvalidTableSize, "16777259"},
		{"table size below the backends", func(m *Model) {
			m.VIPs[0].TableSize = 2
			m.VIPs[0].Backends = append(m.VIPs[0].Backends, be("10.0.0.3", 3))
		}, hashing.ErrInvalidTableSize, "192.0.2.1"},
		{"dsr across families", func(m *Model) { m.VIPs[0].Mode = ModeDSR }, nil, "dsr needs backends of the VIP's address family"},
		{"dsr6 to an IPv4 backend", func(m *Model) {
			m.VIPs[0] = vip("2001:db8::1", ipProtoTCP, 80, ModeDSR, be("10.0.0.1", 1))
		}, nil, "dsr needs backends"},
		{"encap to IPv4 without a local IPv4 address", func(m *Model) { m.LocalAddr4 = netip.Addr{} }, nil, "needs the appliance's IPv4 address"},
		{"encap to IPv6 without a local IPv6 address", func(m *Model) { m.LocalAddr6 = netip.Addr{} }, nil, "needs the appliance's IPv6 address"},
		{"gue without a local address", func(m *Model) { m.VIPs[0].Mode = ModeGUE; m.LocalAddr6 = netip.Addr{} }, nil, "fd00::1"},
		{"source prefix of the other family", func(m *Model) {
			m.VIPs[0].SourcePrefix = netip.MustParsePrefix("100.64.0.0/16")
		}, nil, "source prefix 100.64.0.0/16 is of another address family"},
		{"source prefix on dsr", func(m *Model) {
			m.VIPs[0].Mode = ModeDSR
			m.VIPs[0].Backends = m.VIPs[0].Backends[:1]
			m.VIPs[0].SourcePrefix = netip.MustParsePrefix("100.64.0.0/16")
		}, nil, "source prefix applies only to ipip and gue"},
		{"mtu below 576", func(m *Model) { m.VIPs[0].MTU = 575 }, nil, "mtu 575 out of range"},
		{"mtu above 9216", func(m *Model) { m.VIPs[0].MTU = 9217 }, nil, "mtu 9217 out of range"},
		{"negative mtu", func(m *Model) { m.VIPs[0].MTU = -1 }, nil, "mtu -1"},
		{"invalid VIP address", func(m *Model) { m.VIPs[0].Addr = netip.Addr{} }, nil, "must be a plain IPv4 or IPv6 address"},
		{"IPv4-mapped VIP address", func(m *Model) { m.VIPs[0].Addr = addr("::ffff:192.0.2.1") }, nil, "must be a plain"},
		{"zoned VIP address", func(m *Model) { m.VIPs[0].Addr = addr("fe80::1%eth0") }, nil, "must be a plain"},
		{"VIP protocol not tcp or udp", func(m *Model) { m.VIPs[0].Proto = ipProtoICMP }, nil, "protocol 1"},
		{"unknown mode", func(m *Model) { m.VIPs[0].Mode = 7 }, nil, "unknown mode 7"},
		{"invalid backend address", func(m *Model) { m.VIPs[0].Backends[0].Addr = netip.Addr{} }, nil, "backend address invalid IP"},
		{"IPv4-mapped backend", func(m *Model) { m.VIPs[0].Backends[0].Addr = addr("::ffff:10.0.0.1") }, nil, "must be a plain"},
		{"unknown backend state", func(m *Model) { m.VIPs[0].Backends[0].State = 9 }, nil, "unknown state 9"},
		{"local IPv4 address of the other family", func(m *Model) { m.LocalAddr4 = addr("fd00::9") }, nil, "not IPv4"},
		{"local IPv6 address IPv4-mapped", func(m *Model) { m.LocalAddr6 = addr("::ffff:10.0.0.9") }, nil, "not IPv6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.edit(&m)
			s, err := BuildSnapshot(m, newRegistry(t), 1)
			if err == nil {
				t.Fatalf("built snapshot %d, want an error", s.Generation)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %q", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not say %q", err, tc.substr)
			}
		})
	}
}

// TestBuildSnapshotAccepts checks the edges of what is valid.
func TestBuildSnapshotAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m *Model)
	}{
		{"empty model", func(m *Model) { m.VIPs = nil }},
		{"vip without backends", func(m *Model) { m.VIPs[0].Backends = nil }},
		{"smallest mtu", func(m *Model) { m.VIPs[0].MTU = 576 }},
		{"largest mtu", func(m *Model) { m.VIPs[0].MTU = 9216 }},
		{"large table", func(m *Model) { m.VIPs[0].TableSize = hashing.LargeTableSize }},
		{"same address, other port", func(m *Model) {
			v := m.VIPs[0]
			v.Port = 443
			m.VIPs = append(m.VIPs, v)
		}},
		{"same address and port, other protocol", func(m *Model) {
			v := m.VIPs[0]
			v.Proto = ipProtoUDP
			m.VIPs = append(m.VIPs, v)
		}},
		{"same backend behind two VIPs", func(m *Model) {
			v := m.VIPs[0]
			v.Addr = addr("192.0.2.2")
			m.VIPs = append(m.VIPs, v)
		}},
		{"encap with a source prefix and no local address", func(m *Model) {
			m.LocalAddr4 = netip.Addr{}
			m.VIPs[0].Backends = m.VIPs[0].Backends[:1]
			m.VIPs[0].SourcePrefix = netip.MustParsePrefix("100.64.0.0/16")
		}},
		{"dsr without local addresses", func(m *Model) {
			m.LocalAddr4, m.LocalAddr6 = netip.Addr{}, netip.Addr{}
			m.VIPs[0].Mode = ModeDSR
			m.VIPs[0].Backends = m.VIPs[0].Backends[:1]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := semModel(vip("192.0.2.1", ipProtoTCP, 80, ModeIPIP, be("10.0.0.1", 1), be("fd00::1", 2)))
			tc.edit(&m)
			if _, err := BuildSnapshot(m, newRegistry(t), 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBuildSnapshotRefusalLeavesRegistry checks that a refused model changes
// no real ID: the next good snapshot gives every pair the ID it had, so no
// established flow moves because of a reload that was refused.
func TestBuildSnapshotRefusalLeavesRegistry(t *testing.T) {
	good := semModel(multiVIP("192.0.2.1", ModeIPIP, 4), multiVIP("192.0.2.2", ModeDSR, 3))
	for _, tc := range []struct {
		name string
		edit func(m *Model)
	}{
		{"vip error after another vip", func(m *Model) {
			m.VIPs[0].Backends = m.VIPs[0].Backends[:1] // releases three pairs if applied
			m.VIPs[1].MTU = 1
		}},
		{"maglev table too small for the backends", func(m *Model) {
			m.VIPs[0].Backends = m.VIPs[0].Backends[:1]
			m.VIPs[1].TableSize = 2
		}},
		{"too many reals", func(m *Model) {
			m.VIPs[0] = multiVIP("192.0.2.1", ModeIPIP, 100)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := NewRegistry(12)
			if err != nil {
				t.Fatal(err)
			}
			before := realIDs(buildSnapshot(t, good, reg, 1))
			bad := semModel(cloneVIPs(good.VIPs)...)
			tc.edit(&bad)
			if _, err := BuildSnapshot(bad, reg, 2); err == nil {
				t.Fatal("bad model accepted")
			}
			after := realIDs(buildSnapshot(t, good, reg, 3))
			if !maps.Equal(before, after) {
				t.Errorf("real IDs changed across a refused snapshot:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func cloneVIPs(vs []VIP) []VIP {
	out := make([]VIP, len(vs))
	for i, v := range vs {
		out[i] = v
		out[i].Backends = append([]Backend(nil), v.Backends...)
	}
	return out
}

// TestBuildSnapshotDoesNotAlias checks that a snapshot keeps its own copy of
// the backends: editing the model afterwards changes nothing it forwards.
func TestBuildSnapshotDoesNotAlias(t *testing.T) {
	m := semModel(multiVIP("192.0.2.1", ModeDSR, 2))
	s := buildSnapshot(t, m, newRegistry(t), 1)
	in := frameOf(tcpPacket(client4, addr("192.0.2.1"), 1, 80, flagSYN, 0))
	want := maglevChoice(t, s, in)
	for i := range m.VIPs[0].Backends {
		m.VIPs[0].Backends[i].MAC = packet.MAC{0x02, 0xee, 0xee, 0xee, 0xee, byte(i)}
		m.VIPs[0].Backends[i].State = StateFailed
	}
	if got := maglevChoice(t, s, in); got != want {
		t.Errorf("editing the model after the build changed the choice from %v to %v", want, got)
	}
}

func TestRegistry(t *testing.T) {
	if _, err := NewRegistry(0); err == nil {
		t.Error("NewRegistry(0) accepted")
	}
	if _, err := NewRegistry(MaxRealsLimit + 1); err == nil {
		t.Error("NewRegistry above the limit accepted")
	}
	reg, err := NewRegistry(4)
	if err != nil {
		t.Fatal(err)
	}
	if reg.MaxReals() != 4 {
		t.Errorf("MaxReals %d, want 4", reg.MaxReals())
	}
	key := func(b string) realKey { return realKey{VIPKey{addr("192.0.2.1"), ipProtoTCP, 80}, addr(b)} }
	a, b, c, d, e := key("10.0.0.1"), key("10.0.0.2"), key("10.0.0.3"), key("10.0.0.4"), key("10.0.0.5")

	ids1, err := reg.assign([]realKey{a, b, c})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[uint32]bool)
	for _, id := range ids1 {
		if id == 0 || seen[id] {
			t.Fatalf("IDs %v: zero or repeated", ids1)
		}
		seen[id] = true
	}
	// A pair keeps its ID while it is present, in any order.
	ids2, err := reg.assign([]realKey{c, a, b})
	if err != nil {
		t.Fatal(err)
	}
	if ids2[0] != ids1[2] || ids2[1] != ids1[0] || ids2[2] != ids1[1] {
		t.Errorf("IDs changed: %v then %v", ids1, ids2)
	}
	// Five pairs do not fit in four, and the refusal changes nothing.
	if _, err := reg.assign([]realKey{a, b, c, d, e}); err == nil {
		t.Fatal("five pairs fit a registry of four")
	}
	ids3, err := reg.assign([]realKey{a, b, c})
	if err != nil {
		t.Fatal(err)
	}
	if ids3[0] != ids1[0] || ids3[1] != ids1[1] || ids3[2] != ids1[2] {
		t.Errorf("IDs changed across a refused assignment: %v then %v", ids1, ids3)
	}
	// A released slot is reused under a new tag, never under the old ID,
	// however often it is reused.
	old := ids1[1]
	past := map[uint32]bool{old: true}
	for i := range 3 * realTagLimit {
		ids, err := reg.assign([]realKey{a, c, d}) // b released, d takes its slot
		if err != nil {
			t.Fatal(err)
		}
		if ids[2]&realSlotMask != old&realSlotMask || ids[2]>>realSlotBits == 0 {
			t.Fatalf("round %d: new pair got %#x, want slot %d with a non-zero tag", i, ids[2], old&realSlotMask)
		}
		if i < realTagLimit/2-1 && past[ids[2]] {
			t.Fatalf("round %d: ID %#x reused before the tags wrapped", i, ids[2])
		}
		past[ids[2]] = true
		if _, err := reg.assign([]realKey{a, b, c}); err != nil {
			t.Fatal(err)
		}
	}
	if reg.slots() != 3 {
		t.Errorf("%d slots used, want 3 (released slots are reused)", reg.slots())
	}
}

// TestModelStrings checks the names used in configuration and reports.
func TestModelStrings(t *testing.T) {
	for _, m := range []Mode{ModeDSR, ModeIPIP, ModeGUE} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseMode("nat"); err == nil {
		t.Error("ParseMode(nat) accepted")
	}
	for _, s := range []BackendState{StateActive, StateDraining, StateFailed} {
		got, err := ParseBackendState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseBackendState(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseBackendState("up"); err == nil {
		t.Error("ParseBackendState(up) accepted")
	}
	for k, want := range map[VIPKey]string{
		{addr("192.0.2.1"), ipProtoTCP, 80}:    "tcp/192.0.2.1:80",
		{addr("192.0.2.1"), ipProtoUDP, 0}:     "udp/192.0.2.1:*",
		{addr("2001:db8::1"), ipProtoTCP, 443}: "tcp/[2001:db8::1]:443",
	} {
		if k.String() != want {
			t.Errorf("VIPKey %v prints %q, want %q", k, k.String(), want)
		}
	}
	names := make(map[string]DropReason)
	for _, r := range DropReasons() {
		n := r.String()
		if n == "" || n == "unknown" || strings.ContainsAny(n, " -") {
			t.Errorf("drop reason %d has label %q", r, n)
		}
		if o, dup := names[n]; dup {
			t.Errorf("drop reasons %d and %d share label %q", o, r, n)
		}
		names[n] = r
	}
	if len(names) != int(NumDropReasons)-1 {
		t.Errorf("%d drop reasons listed, want %d", len(names), NumDropReasons-1)
	}
}

// TestCountersAdd fills every counter through reflection, so a field added
// to Counters but forgotten in Add fails here.
func TestCountersAdd(t *testing.T) {
	var a Counters
	n := uint64(0)
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Uint64:
			n++
			v.SetUint(n)
		case reflect.Array:
			for i := range v.Len() {
				fill(v.Index(i))
			}
		case reflect.Struct:
			for i := range v.NumField() {
				fill(v.Field(i))
			}
		default:
			t.Fatalf("counter of kind %v", v.Kind())
		}
	}
	fill(reflect.ValueOf(&a).Elem())
	var sum Counters
	sum.Add(&a)
	sum.Add(&a)
	av, sv := reflect.ValueOf(a), reflect.ValueOf(sum)
	for i := range av.NumField() {
		if !reflect.DeepEqual(sv.Field(i).Interface(), doubled(av.Field(i))) {
			t.Errorf("%s: sum of two is %v, want %v", av.Type().Field(i).Name, sv.Field(i), doubled(av.Field(i)))
		}
	}
	var drops uint64
	for _, d := range a.Drops {
		drops += d
	}
	if sum.Dropped() != 2*drops {
		t.Errorf("Dropped %d, want %d", sum.Dropped(), 2*drops)
	}
}

func doubled(v reflect.Value) any {
	if v.Kind() == reflect.Uint64 {
		return 2 * v.Uint()
	}
	var d [NumDropReasons]uint64
	for i := range d {
		d[i] = 2 * v.Index(i).Uint()
	}
	return d
}

func TestNewForwarderRejects(t *testing.T) {
	if _, err := NewForwarder(testFlowConfig(), 0); err == nil {
		t.Error("max reals 0 accepted")
	}
	bad := testFlowConfig()
	bad.Capacity = 0
	if _, err := NewForwarder(bad, 16); err == nil {
		t.Error("flow table of capacity 0 accepted")
	}
}
