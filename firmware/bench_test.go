package firmware

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// benchProgram runs frame through prog in the kernel b.N times, batch runs
// per BPF_PROG_TEST_RUN call, and reports the program's own run time per
// packet (the kernel times the program only, not the syscall) and the packet
// rate that implies for one CPU. Within a call the kernel reruns the program
// on the same buffer without restoring it, so a program that rewrites the
// frame must use batch 1.
func benchProgram(b *testing.B, prog *ebpf.Program, frame []byte, want uint32, batch int) {
	b.Helper()
	b.ReportAllocs()
	var total time.Duration
	var runs int
	b.ResetTimer()
	for n := b.N; n > 0; n -= batch {
		repeat := min(n, batch)
		v, per, err := prog.Benchmark(frame, repeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		if v != want {
			b.Fatalf("verdict %s, want %s", verdictName(v), verdictName(want))
		}
		total += per * time.Duration(repeat)
		runs += repeat
	}
	nsPerPkt := float64(total.Nanoseconds()) / float64(runs)
	b.ReportMetric(nsPerPkt, "ns/pkt")
	b.ReportMetric(1e3/nsPerPkt, "Mpps")
}

func BenchmarkRedirect(b *testing.B) {
	r := loadTestRedirect(b, testVIPs)
	cases := []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"tcp4-vip", eth4(tcp4(b, "198.51.100.7", 40000, "192.0.2.10", 80)), xdpDrop},
		{"tcp4-wildcard-vip", eth4(tcp4(b, "198.51.100.7", 40000, "192.0.2.20", 8080)), xdpDrop},
		{"tcp4-non-vip", eth4(tcp4(b, "198.51.100.7", 40000, "192.0.2.99", 80)), xdpPass},
		{"tcp6-vip", eth6(tcp6(b, "2001:db8:c::7", 40000, "2001:db8::10", 443)), xdpDrop},
		{"icmp4-frag-needed", icmp4Error(b, 3, 4, "203.0.113.1", "192.0.2.10", tcp4(b, "192.0.2.10", 80, "198.51.100.7", 40000)), xdpDrop},
		{"arp", ether(0x0806, payload(28)), xdpPass},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { benchProgram(b, r.Program(), c.frame, c.want, 100_000) })
	}
}
