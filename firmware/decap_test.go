package firmware

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/weirlb/weir/internal/testutil"
)

const testGUEPort = 6080

var decapVIPs = []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}

// Outer addresses: the appliance (lb) and the backend.
const lb4, be4, lb6, be6 = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"

func loadTestDecap(tb testing.TB, cfg DecapConfig) *Decap {
	tb.Helper()
	testutil.RequirePrivileged(tb)
	d, err := LoadDecap(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Error(err)
		}
	})
	return d
}

func subDecap(a, b DecapCounters) DecapCounters {
	return DecapCounters{
		IPIP: a.IPIP - b.IPIP, IP6in4: a.IP6in4 - b.IP6in4, IP4in6: a.IP4in6 - b.IP4in6,
		IP6IP6: a.IP6IP6 - b.IP6IP6, GUE: a.GUE - b.GUE, Passed: a.Passed - b.Passed,
		NotVIP: a.NotVIP - b.NotVIP, Malformed: a.Malformed - b.Malformed,
		CEMarked: a.CEMarked - b.CEMarked, DroppedECN: a.DroppedECN - b.DroppedECN,
		Failed: a.Failed - b.Failed, ForeignSource: a.ForeignSource - b.ForeignSource,
	}
}

type decapCase struct {
	name  string
	frame []byte
	want  uint32
	out   []byte // expected output frame; nil: the input, untouched
	count DecapCounters
}

var (
	dPass      = DecapCounters{Passed: 1}
	dMalformed = DecapCounters{Passed: 1, Malformed: 1}
	dNotVIP    = DecapCounters{Passed: 1, NotVIP: 1}
	dForeign   = DecapCounters{Passed: 1, ForeignSource: 1}
)

func runDecapCases(t *testing.T, d *Decap, cases []decapCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, err := d.Counters()
			mustNoErr(t, err)
			in := slices.Clone(tc.frame)
			opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
			got, err := d.Program().Run(opts)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if got != tc.want {
				t.Errorf("verdict %s, want %s", verdictName(got), verdictName(tc.want))
			}
			want := tc.out
			if want == nil {
				want = tc.frame
			}
			if tc.want != xdpDrop && !slices.Equal(opts.DataOut, want) {
				t.Errorf("output frame:\n got %x\nwant %x", opts.DataOut, want)
			}
			after, err := d.Counters()
			mustNoErr(t, err)
			if c := subDecap(after, before); c != tc.count {
				t.Errorf("counters changed by %+v, want %+v", c, tc.count)
			}
		})
	}
}

// Encapsulations of an inner packet, built the way an encapsulator would.
func encap4(tb testing.TB, proto layers.IPProtocol, inner []byte) []byte {
	return serialize(tb, ipv4(lb4, be4, proto), gopacket.Payload(inner))
}

func encap6(tb testing.TB, nh layers.IPProtocol, inner []byte) []byte {
	return serialize(tb, ipv6(lb6, be6, nh), gopacket.Payload(inner))
}

func gue4(tb testing.TB, port uint16, inner []byte) []byte {
	return serialize(tb, ipv4(lb4, be4, layers.IPProtocolUDP), udp(49152, port), gopacket.Payload(inner))
}

func gue6(tb testing.TB, port uint16, inner []byte) []byte {
	return serialize(tb, ipv6(lb6, be6, layers.IPProtocolUDP), udp(49152, port), gopacket.Payload(inner))
}

func TestDecap(t *testing.T) {
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort})
	in4 := tcp4(t, "198.51.100.7", 40000, "192.0.2.10", 80)
	in6 := tcp6(t, "2001:db8:c::7", 40000, "2001:db8::10", 443)
	ipip, v6in4 := layers.IPProtocolIPv4, layers.IPProtocolIPv6
	q, ad := layers.EthernetTypeDot1Q, layers.EthernetTypeQinQ
	runDecapCases(t, d, []decapCase{
		{"ipip", eth4(encap4(t, ipip, in4)), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		{"ipv6 in ipv4", eth4(encap4(t, v6in4, in6)), xdpPass, eth6(in6), DecapCounters{IP6in4: 1}},
		{"ipv4 in ipv6", eth6(encap6(t, ipip, in4)), xdpPass, eth4(in4), DecapCounters{IP4in6: 1}},
		{"ipv6 in ipv6", eth6(encap6(t, v6in4, in6)), xdpPass, eth6(in6), DecapCounters{IP6IP6: 1}},
		{"gue v4 in v4", eth4(gue4(t, testGUEPort, in4)), xdpPass, eth4(in4), DecapCounters{GUE: 1}},
		{"gue v6 in v4", eth4(gue4(t, testGUEPort, in6)), xdpPass, eth6(in6), DecapCounters{GUE: 1}},
		{"gue v4 in v6", eth6(gue6(t, testGUEPort, in4)), xdpPass, eth4(in4), DecapCounters{GUE: 1}},
		{"gue v6 in v6", eth6(gue6(t, testGUEPort, in6)), xdpPass, eth6(in6), DecapCounters{GUE: 1}},
		{"ipip, 802.1q", eth4(encap4(t, ipip, in4), q), xdpPass, eth4(in4, q), DecapCounters{IPIP: 1}},
		{"ipv4 in ipv6, 802.1ad+802.1q", eth6(encap6(t, ipip, in4), ad, q), xdpPass, eth4(in4, ad, q), DecapCounters{IP4in6: 1}},
		{"gue v6 in v4, 802.1ad+802.1q", eth4(gue4(t, testGUEPort, in6), ad, q), xdpPass, eth6(in6, ad, q), DecapCounters{GUE: 1}},
		{"ipip with ethernet padding", concat(eth4(encap4(t, ipip, in4)), make([]byte, 6)), xdpPass,
			concat(eth4(in4), make([]byte, 6)), DecapCounters{IPIP: 1}},
		{"ipip with outer ip options", eth4(func() []byte {
			h := ipv4(lb4, be4, ipip)
			h.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
			return serialize(t, h, gopacket.Payload(in4))
		}()), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
	})
}

func TestDecapPassesOtherTraffic(t *testing.T) {
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort})
	in4 := tcp4(t, "198.51.100.7", 40000, "192.0.2.10", 80)
	other4 := tcp4(t, "198.51.100.7", 40000, "192.0.2.99", 80)
	other6 := tcp6(t, "2001:db8:c::7", 40000, "2001:db8::99", 443)
	frag := func() []byte {
		h := ipv4(lb4, be4, layers.IPProtocolIPv4)
		h.Flags = layers.IPv4MoreFragments
		return eth4(serialize(t, h, gopacket.Payload(in4)))
	}()
	runDecapCases(t, d, []decapCase{
		{"plain tcp to the backend", eth4(tcp4(t, "198.51.100.7", 40000, be4, 22)), xdpPass, nil, dPass},
		{"plain tcp6 to the vip", eth6(tcp6(t, "2001:db8:c::7", 40000, "2001:db8::10", 443)), xdpPass, nil, dPass},
		{"plain udp to another port", eth4(udp4(t, lb4, 1000, be4, 53)), xdpPass, nil, dPass},
		{"arp", ether(layers.EthernetTypeARP, payload(28)), xdpPass, nil, dPass},
		{"gue to another port", eth4(gue4(t, testGUEPort+1, in4)), xdpPass, nil, dPass},
		{"ipip to a non-vip", eth4(encap4(t, layers.IPProtocolIPv4, other4)), xdpPass, nil, dNotVIP},
		{"ipv6 in ipv6 to a non-vip", eth6(encap6(t, layers.IPProtocolIPv6, other6)), xdpPass, nil, dNotVIP},
		{"gue to a non-vip", eth6(gue6(t, testGUEPort, other4)), xdpPass, nil, dNotVIP},
		{"fragmented ipip", frag, xdpPass, nil, dPass},
		{"ipv6 ext header before the tunnel", eth6(serialize(t, ipv6(lb6, be6, layers.IPProtocolIPv6Destination),
			gopacket.Payload(concat(ipv6Opts(layers.IPProtocolIPv4, 1), in4)))), xdpPass, nil, dPass},
	})

	t.Run("gue disabled", func(t *testing.T) {
		d0 := loadTestDecap(t, DecapConfig{VIPs: decapVIPs})
		runDecapCases(t, d0, []decapCase{
			{"gue to the usual port", eth4(gue4(t, testGUEPort, in4)), xdpPass, nil, dPass},
			{"ipip still works", eth4(encap4(t, layers.IPProtocolIPv4, in4)), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		})
	})
}

func TestDecapMalformed(t *testing.T) {
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort})
	in4 := tcp4(t, "198.51.100.7", 40000, "192.0.2.10", 80)
	in6 := tcp6(t, "2001:db8:c::7", 40000, "2001:db8::10", 443)
	ipip, v6 := layers.IPProtocolIPv4, layers.IPProtocolIPv6
	patch := func(f []byte, off int, b ...byte) []byte {
		f = slices.Clone(f)
		copy(f[off:], b)
		return f
	}
	good := eth4(encap4(t, ipip, in4))
	// The outer length also covers 4 bytes of trailing garbage inside the
	// tunnel: the inner length no longer matches.
	trailing := eth4(encap4(t, ipip, concat(in4, []byte{1, 2, 3, 4})))
	runDecapCases(t, d, []decapCase{
		{"outer checksum wrong", patch(good, 14+10, good[14+10]^0xff), xdpPass, nil, dMalformed},
		{"outer ihl 4", patch(good, 14, 0x44), xdpPass, nil, dMalformed},
		{"outer length past the frame", patch(good, 14+2, 0x10, 0x00), xdpPass, nil, dMalformed},
		{"outer header cut", good[:14+12], xdpPass, nil, dMalformed},
		{"vlan tag cut", eth4(nil, layers.EthernetTypeDot1Q)[:16], xdpPass, nil, dMalformed},
		{"ipip carrying ipv6", eth4(encap4(t, ipip, in6)), xdpPass, nil, dMalformed},
		{"ipv6 in ipv4 carrying ipv4", eth4(encap4(t, v6, in4)), xdpPass, nil, dMalformed},
		{"ipip with trailing bytes in the tunnel", trailing, xdpPass, nil, dMalformed},
		{"ipip with an inner header cut", eth4(encap4(t, ipip, in4[:16])), xdpPass, nil, dMalformed},
		{"ipip with inner ihl 3", eth4(encap4(t, ipip, patch(in4, 0, 0x43))), xdpPass, nil, dMalformed},
		{"ipv6 in ipv6 with inner payload length wrong", eth6(encap6(t, v6, patch(in6, 4, 0, 99))), xdpPass, nil, dMalformed},
		{"outer ipv6 payload length past the frame", patch(eth6(encap6(t, v6, in6)), 14+4, 0x10, 0), xdpPass, nil, dMalformed},
		{"gue variant 0", eth4(gue4(t, testGUEPort, concat([]byte{0, 0, 0, 0}, in4))), xdpPass, nil, dMalformed},
		{"gue with an empty payload", eth4(gue4(t, testGUEPort, nil)), xdpPass, nil, dMalformed},
		{"gue udp length wrong", func() []byte {
			f := eth4(gue4(t, testGUEPort, in4))
			return patch(f, 14+20+4, 0, 9)
		}(), xdpPass, nil, dMalformed},
	})
}

// TestDecapECN checks RFC 6040 decapsulation: an outer CE mark reaches the
// inner header (with the IPv4 checksum fixed up), and a not-ECT inner packet
// under an outer CE is dropped.
func TestDecapECN(t *testing.T) {
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort})
	inner4 := func(ecn uint8) []byte {
		h := ipv4("198.51.100.7", "192.0.2.10", layers.IPProtocolTCP)
		h.TOS = 0x20<<2 | ecn // DSCP CS1 plus the ECN field
		return serialize(t, h, tcp(40000, 80))
	}
	inner6 := func(ecn uint8) []byte {
		h := ipv6("2001:db8:c::7", "2001:db8::10", layers.IPProtocolTCP)
		h.TrafficClass = 0x20<<2 | ecn
		h.FlowLabel = 0x12345
		return serialize(t, h, tcp(40000, 443))
	}
	outer4 := func(ecn uint8, inner []byte) []byte {
		h := ipv4(lb4, be4, layers.IPProtocolIPv4)
		if inner[0]>>4 == 6 {
			h.Protocol = layers.IPProtocolIPv6
		}
		h.TOS = ecn
		return serialize(t, h, gopacket.Payload(inner))
	}
	outer6 := func(ecn uint8, inner []byte) []byte {
		h := ipv6(lb6, be6, layers.IPProtocolUDP)
		h.TrafficClass = ecn
		return serialize(t, h, udp(49152, testGUEPort), gopacket.Payload(inner))
	}
	const notECT, ect0, ect1, ce = 0, 2, 1, 3
	runDecapCases(t, d, []decapCase{
		{"ce over ect(0) v4", eth4(outer4(ce, inner4(ect0))), xdpPass, eth4(inner4(ce)), DecapCounters{IPIP: 1, CEMarked: 1}},
		{"ce over ect(1) v4", eth4(outer4(ce, inner4(ect1))), xdpPass, eth4(inner4(ce)), DecapCounters{IPIP: 1, CEMarked: 1}},
		{"ce over ce v4", eth4(outer4(ce, inner4(ce))), xdpPass, eth4(inner4(ce)), DecapCounters{IPIP: 1}},
		{"ce over not-ect v4", eth4(outer4(ce, inner4(notECT))), xdpDrop, nil, DecapCounters{DroppedECN: 1}},
		{"ect(0) over not-ect v4", eth4(outer4(ect0, inner4(notECT))), xdpPass, eth4(inner4(notECT)), DecapCounters{IPIP: 1}},
		{"ce over ect(0) v6 in v4", eth4(outer4(ce, inner6(ect0))), xdpPass, eth6(inner6(ce)), DecapCounters{IP6in4: 1, CEMarked: 1}},
		{"ce over ect(1) v6, gue in v6", eth6(outer6(ce, inner6(ect1))), xdpPass, eth6(inner6(ce)), DecapCounters{GUE: 1, CEMarked: 1}},
		{"ce over ect(0) v4, gue in v6", eth6(outer6(ce, inner4(ect0))), xdpPass, eth4(inner4(ce)), DecapCounters{GUE: 1, CEMarked: 1}},
		{"ce over not-ect v6", eth6(outer6(ce, inner6(notECT))), xdpDrop, nil, DecapCounters{DroppedECN: 1}},
	})
	// The marked IPv4 header's checksum must verify: compare with
	// gopacket's own serialization (done above) and decode it back.
	out := make([]byte, 256)
	frame := eth4(outer4(ce, inner4(ect0)))
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	_, err := d.Program().Run(opts)
	mustNoErr(t, err)
	pkt := gopacket.NewPacket(opts.DataOut, layers.LayerTypeEthernet, gopacket.Default)
	if ip4, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); !ok || ip4.TOS&3 != ce {
		t.Errorf("decoded output %v", pkt)
	}
}

func TestDecapVIPs(t *testing.T) {
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs[:1], GUEPort: testGUEPort})
	in6 := tcp6(t, "2001:db8:c::7", 40000, "2001:db8::10", 443)
	frame := eth6(encap6(t, layers.IPProtocolIPv6, in6))
	runDecapCases(t, d, []decapCase{{"v6 vip not yet configured", frame, xdpPass, nil, dNotVIP}})
	mustNoErr(t, d.SetVIPs([]netip.Addr{netip.MustParseAddr("::ffff:192.0.2.10"), netip.MustParseAddr("2001:db8::10")}))
	if got := d.VIPs(); !slices.Equal(got, decapVIPs) {
		t.Errorf("VIPs() = %v, want %v", got, decapVIPs)
	}
	runDecapCases(t, d, []decapCase{{"v6 vip configured", frame, xdpPass, eth6(in6), DecapCounters{IP6IP6: 1}}})
	mustNoErr(t, d.SetVIPs(nil))
	runDecapCases(t, d, []decapCase{{"v6 vip removed", frame, xdpPass, nil, dNotVIP}})
	if err := d.SetVIPs([]netip.Addr{{}}); !errors.Is(err, ErrInvalidVIP) {
		t.Errorf("SetVIPs with a zero address: %v", err)
	}
	if d.GUEPort() != testGUEPort {
		t.Errorf("GUEPort() = %d", d.GUEPort())
	}
	var n int
	var k decapDecapKey
	var v uint8
	for it := d.objs.DecapVips.Iterate(); it.Next(&k, &v); {
		n++
	}
	if n != 0 {
		t.Errorf("decap_vips holds %d entries after SetVIPs(nil)", n)
	}
	mustNoErr(t, d.Close())
	if _, err := d.Counters(); !errors.Is(err, ErrClosed) {
		t.Errorf("Counters after Close: %v", err)
	}
}

func TestDecapAttach(t *testing.T) {
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort})
	ns := newTestNS(t)
	a, _ := ns.addVeth(t, vethPair{rxA: 1, txA: 1, rxB: 1, txB: 1})
	idx := a.Attrs().Index
	var att *Attachment
	mustNoErr(t, ns.do(func() error {
		var err error
		att, err = d.Attach(idx, AttachAuto)
		return err
	}))
	if got := ns.xdpMode(t, idx); att.Mode() != AttachNative || got != kernelXDPDriver {
		t.Errorf("mode %v, kernel %d", att.Mode(), got)
	}
	mustNoErr(t, d.Close())
	if got := ns.xdpMode(t, idx); got != kernelXDPNone {
		t.Errorf("after Decap.Close the kernel reports xdp mode %d", got)
	}
}

func BenchmarkDecap(b *testing.B) {
	d := loadTestDecap(b, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort})
	in4 := tcp4(b, "198.51.100.7", 40000, "192.0.2.10", 80)
	in6 := tcp6(b, "2001:db8:c::7", 40000, "2001:db8::10", 443)
	cases := []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"ipip", eth4(encap4(b, layers.IPProtocolIPv4, in4)), xdpPass},
		{"ip6ip6", eth6(encap6(b, layers.IPProtocolIPv6, in6)), xdpPass},
		{"gue4", eth4(gue4(b, testGUEPort, in4)), xdpPass},
		{"plain-tcp", eth4(in4), xdpPass},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			before, err := d.Counters()
			mustNoErr(b, err)
			benchProgram(b, d.Program(), c.frame, c.want, 1)
			after, err := d.Counters()
			mustNoErr(b, err)
			if c.name != "plain-tcp" && after.Decapsulated()-before.Decapsulated() != uint64(b.N) {
				b.Errorf("decapsulated %d frames in %d runs", after.Decapsulated()-before.Decapsulated(), b.N)
			}
		})
	}
	// The allow-list's price: a config lookup and an LPM trie lookup.
	da := loadTestDecap(b, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort, AllowSources: prefixes("10.0.0.0/24", "192.168.0.0/16", "fd00::/64")})
	b.Run("ipip-allowed", func(b *testing.B) {
		benchProgram(b, da.Program(), eth4(encap4(b, layers.IPProtocolIPv4, in4)), xdpPass, 1)
	})
	b.Run("ipip-foreign", func(b *testing.B) {
		before, err := da.Counters()
		mustNoErr(b, err)
		benchProgram(b, da.Program(), tunnel4From(b, "172.16.0.1", layers.IPProtocolIPv4, in4), xdpPass, 1)
		after, err := da.Counters()
		mustNoErr(b, err)
		if n := after.ForeignSource - before.ForeignSource; n != uint64(b.N) {
			b.Errorf("counted %d foreign sources in %d runs", n, b.N)
		}
	})
}

// Encapsulations from a given outer source, to the backend.
func tunnel4From(tb testing.TB, src string, proto layers.IPProtocol, inner []byte) []byte {
	return eth4(serialize(tb, ipv4(src, be4, proto), gopacket.Payload(inner)))
}

func tunnel6From(tb testing.TB, src string, nh layers.IPProtocol, inner []byte) []byte {
	return eth6(serialize(tb, ipv6(src, be6, nh), gopacket.Payload(inner)))
}

func gue4From(tb testing.TB, src string, inner []byte) []byte {
	return eth4(serialize(tb, ipv4(src, be4, layers.IPProtocolUDP), udp(49152, testGUEPort), gopacket.Payload(inner)))
}

func gue6From(tb testing.TB, src string, inner []byte) []byte {
	return eth6(serialize(tb, ipv6(src, be6, layers.IPProtocolUDP), udp(49152, testGUEPort), gopacket.Payload(inner)))
}

func prefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// TestDecapAllowSources checks the outer source allow-list: sources inside it
// are decapsulated, others pass untouched and are counted, and an empty list
// accepts every source.
func TestDecapAllowSources(t *testing.T) {
	allow := prefixes("10.0.0.0/30", "fd00::/64", "203.0.113.7/32")
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort, AllowSources: allow})
	if got, want := d.AllowSources(), prefixes("10.0.0.0/30", "203.0.113.7/32", "fd00::/64"); !slices.Equal(got, want) {
		t.Errorf("AllowSources() = %v, want %v", got, want)
	}
	in4 := tcp4(t, "198.51.100.7", 40000, "192.0.2.10", 80)
	in6 := tcp6(t, "2001:db8:c::7", 40000, "2001:db8::10", 443)
	other4 := tcp4(t, "198.51.100.7", 40000, "192.0.2.99", 80)
	ipip, v6 := layers.IPProtocolIPv4, layers.IPProtocolIPv6
	// 10.0.0.4 is just past 10.0.0.0/30, fd00:0:0:1::1 just past fd00::/64.
	const foreign4, foreign6 = "10.0.0.4", "fd00:0:0:1::1"
	runDecapCases(t, d, []decapCase{
		{"ipip from an allowed v4 source", tunnel4From(t, lb4, ipip, in4), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		{"ipip from the last address of the prefix", tunnel4From(t, "10.0.0.3", ipip, in4), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		{"ipip from an allowed /32", tunnel4From(t, "203.0.113.7", ipip, in4), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		{"ipv6 in ipv4 from an allowed v4 source", tunnel4From(t, lb4, v6, in6), xdpPass, eth6(in6), DecapCounters{IP6in4: 1}},
		{"ipv6 in ipv6 from an allowed v6 source", tunnel6From(t, lb6, v6, in6), xdpPass, eth6(in6), DecapCounters{IP6IP6: 1}},
		{"ipv4 in ipv6 from an allowed v6 source", tunnel6From(t, "fd00::ffff:1", ipip, in4), xdpPass, eth4(in4), DecapCounters{IP4in6: 1}},
		{"gue in v4 from an allowed source", gue4From(t, lb4, in6), xdpPass, eth6(in6), DecapCounters{GUE: 1}},
		{"gue in v6 from an allowed source", gue6From(t, lb6, in4), xdpPass, eth4(in4), DecapCounters{GUE: 1}},

		{"ipip from a foreign v4 source", tunnel4From(t, foreign4, ipip, in4), xdpPass, nil, dForeign},
		{"ipip from a neighbour of the /32", tunnel4From(t, "203.0.113.6", ipip, in4), xdpPass, nil, dForeign},
		{"ipv6 in ipv4 from a foreign source", tunnel4From(t, foreign4, v6, in6), xdpPass, nil, dForeign},
		{"ipv6 in ipv6 from a foreign v6 source", tunnel6From(t, foreign6, v6, in6), xdpPass, nil, dForeign},
		{"ipv4 in ipv6 from a foreign v6 source", tunnel6From(t, foreign6, ipip, in4), xdpPass, nil, dForeign},
		{"gue in v4 from a foreign source", gue4From(t, foreign4, in4), xdpPass, nil, dForeign},
		{"gue in v6 from a foreign source", gue6From(t, foreign6, in6), xdpPass, nil, dForeign},
		// The VIP check comes first: not_vip, not foreign.
		{"ipip from a foreign source to a non-vip", tunnel4From(t, foreign4, ipip, other4), xdpPass, nil, dNotVIP},
		{"plain tcp from a foreign source", eth4(tcp4(t, foreign4, 40000, be4, 22)), xdpPass, nil, dPass},
	})

	// An IPv4-only list refuses every IPv6 outer source.
	mustNoErr(t, d.SetAllowSources(prefixes("10.0.0.1/32")))
	runDecapCases(t, d, []decapCase{
		{"v4-only list: allowed v4 source", tunnel4From(t, lb4, ipip, in4), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		{"v4-only list: formerly allowed v4 source", tunnel4From(t, "10.0.0.2", ipip, in4), xdpPass, nil, dForeign},
		{"v4-only list: any v6 source", tunnel6From(t, lb6, v6, in6), xdpPass, nil, dForeign},
		{"v4-only list: gue in v6", gue6From(t, lb6, in6), xdpPass, nil, dForeign},
	})

	// 0.0.0.0/0 accepts every IPv4 source, still none over IPv6.
	mustNoErr(t, d.SetAllowSources(prefixes("0.0.0.0/0")))
	runDecapCases(t, d, []decapCase{
		{"/0: any v4 source", tunnel4From(t, "192.0.2.200", ipip, in4), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		{"/0: v6 source", tunnel6From(t, lb6, v6, in6), xdpPass, nil, dForeign},
	})

	// Invalid prefixes are refused and change nothing.
	for _, p := range []netip.Prefix{{}, netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 33),
		netip.MustParsePrefix("10.0.0.1/8"), netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("::ffff:10.0.0.0/104")} {
		if err := d.SetAllowSources([]netip.Prefix{lbPrefix4, p}); !errors.Is(err, ErrInvalidAllowSource) {
			t.Errorf("SetAllowSources(%v): %v, want ErrInvalidAllowSource", p, err)
		}
	}
	if got, want := d.AllowSources(), prefixes("0.0.0.0/0"); !slices.Equal(got, want) {
		t.Errorf("after refused updates AllowSources() = %v, want %v", got, want)
	}

	// Empty: every source is accepted again, and the maps are empty.
	mustNoErr(t, d.SetAllowSources(nil))
	runDecapCases(t, d, []decapCase{
		{"empty list: foreign v4 source", tunnel4From(t, foreign4, ipip, in4), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		{"empty list: foreign v6 source", tunnel6From(t, foreign6, v6, in6), xdpPass, eth6(in6), DecapCounters{IP6IP6: 1}},
		{"empty list: gue from a foreign source", gue6From(t, foreign6, in4), xdpPass, eth4(in4), DecapCounters{GUE: 1}},
	})
	if got := d.AllowSources(); len(got) != 0 {
		t.Errorf("AllowSources() = %v after SetAllowSources(nil)", got)
	}
	var cfg decapDecapConfig
	mustNoErr(t, d.objs.DecapConfig.Lookup(uint32(0), &cfg))
	if cfg.AllowSrc != 0 {
		t.Errorf("decap_config.allow_src = %d with an empty list", cfg.AllowSrc)
	}
	n := 0
	var k4 decapSrc4Key
	var k6 decapSrc6Key
	var v uint8
	for it := d.objs.DecapSrc4.Iterate(); it.Next(&k4, &v); {
		n++
	}
	for it := d.objs.DecapSrc6.Iterate(); it.Next(&k6, &v); {
		n++
	}
	if n != 0 {
		t.Errorf("the allow-list tries hold %d entries after SetAllowSources(nil)", n)
	}
}

var lbPrefix4 = netip.MustParsePrefix("10.0.0.1/32")

// TestDecapAllowSourcesDefault checks that a program loaded without an
// allow-list decapsulates from any source.
func TestDecapAllowSourcesDefault(t *testing.T) {
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs, GUEPort: testGUEPort})
	in4 := tcp4(t, "198.51.100.7", 40000, "192.0.2.10", 80)
	in6 := tcp6(t, "2001:db8:c::7", 40000, "2001:db8::10", 443)
	runDecapCases(t, d, []decapCase{
		{"ipip from anywhere", tunnel4From(t, "192.0.2.200", layers.IPProtocolIPv4, in4), xdpPass, eth4(in4), DecapCounters{IPIP: 1}},
		{"ipv6 in ipv6 from anywhere", tunnel6From(t, "2001:db8:ff::1", layers.IPProtocolIPv6, in6), xdpPass, eth6(in6), DecapCounters{IP6IP6: 1}},
		{"gue from anywhere", gue4From(t, "192.0.2.200", in6), xdpPass, eth6(in6), DecapCounters{GUE: 1}},
	})
}

func TestDecapAllowSourcesLimits(t *testing.T) {
	testutil.RequirePrivileged(t)
	if _, err := LoadDecap(DecapConfig{VIPs: decapVIPs, AllowSources: prefixes("10.0.0.1/8")}); !errors.Is(err, ErrInvalidAllowSource) {
		t.Errorf("LoadDecap with a bad prefix: %v", err)
	}
	if _, err := LoadDecap(DecapConfig{VIPs: decapVIPs, MaxAllowSources: -1}); err == nil {
		t.Error("LoadDecap with MaxAllowSources -1 succeeded")
	}
	d := loadTestDecap(t, DecapConfig{VIPs: decapVIPs, AllowSources: prefixes("10.0.0.1/32", "10.0.0.2/32"), MaxAllowSources: 3})
	// Two old and two new IPv4 prefixes do not fit in three slots
	// together; IPv6 has its own three.
	if err := d.SetAllowSources(prefixes("10.0.0.3/32", "10.0.0.4/32")); err == nil {
		t.Error("SetAllowSources past MaxAllowSources succeeded")
	}
	mustNoErr(t, d.SetAllowSources(prefixes("10.0.0.1/32", "10.0.0.3/32", "fd00::1/128", "fd00::2/128", "fd00::3/128")))
	mustNoErr(t, d.Close())
	if err := d.SetAllowSources(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SetAllowSources after Close: %v", err)
	}
}
