package appliance

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzForward feeds arbitrary frames, at arbitrary headroom, to a forwarder
// whose snapshot has VIPs of every mode, family and too-big policy. For each
// frame it checks that Forward does not panic, honours its memory contract
// (nothing written after the frame; the headroom written only for an
// encapsulated or reply frame, and only inside [outStart, start)), counts
// the frame exactly once, and that any frame it sends decodes with gopacket
// as what the verdict claims, with valid checksums (checkOutput). The frame
// is then sent again, now with the flow in the table, and must get the same
// verdict and backend.
//
// The seed corpus is testdata/fuzz/FuzzForward: the golden table's inputs
// and the hostile frames added below.
func FuzzForward(f *testing.F) {
	// Hostile frames, each a variation of a valid one.
	ok4 := tcpPacket(client4, addr("192.0.2.101"), 1000, 80, flagSYN, 10)
	ok6 := tcpPacket(client6, addr("2001:db8::102"), 1000, 80, flagSYN, 10)
	mut := func(b []byte, fn func(b []byte)) []byte { b = bytes.Clone(b); fn(b); return b }
	f.Add(frameOf(mut(ok4, func(b []byte) { b[0] = 0x4f })), uint8(64))                                                   // IHL 15: options run past the packet
	f.Add(frameOf(mut(ok4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 0xffff) })), uint8(64))                     // total length past the frame
	f.Add(frameOf(mut(ok4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 20) })), uint8(64))                         // total length leaves no TCP header
	f.Add(frameOf(mut(ok4, func(b []byte) { b[32] = 0xf0 })), uint8(64))                                                  // TCP data offset 60 past the packet
	f.Add(frameOf(mut(ok6, func(b []byte) { binary.BigEndian.PutUint16(b[4:], 0xffff) })), uint8(64))                     // payload length past the frame
	f.Add(frameOf(mut(ok6, func(b []byte) { b[6] = ipProtoFrag })), uint8(64))                                            // a fragment header that is really TCP
	f.Add(frameOf(mut(ok6, func(b []byte) { b[6] = 0 })), uint8(64))                                                      // hop-by-hop whose length runs off
	f.Add(frameOf(ok4, 1, 2), uint8(20))                                                                                  // two tags, exactly the IPIP headroom
	f.Add(frameOf(ok6, 1, 2), uint8(47))                                                                                  // one byte short of GUE over IPv6
	f.Add(frameOf(tcpPacket(client6, addr("2001:db8::21"), 1, 80, flagACK, 1400)), uint8(48))                             // too big: reply at minimum headroom
	f.Add(frameOf(icmpTooBigFrom(router4, reversed(client4, addr("192.0.2.101"), 1, 80, ipProtoTCP), 0)[:40]), uint8(64)) // quote cut short

	s := buildSnapshot(f, allocModel(), newRegistry(f), 1)
	fw := newForwarder(f, s, oneShotConfig())
	f.Fuzz(func(t *testing.T, frame []byte, headroom uint8) {
		fw.Flows().Reset()
		*fw.Counters() = Counters{}
		in := withIPv4Checksum(bytes.Clone(frame))
		start := int(headroom)
		var first Verdict
		var firstMAC []byte
		for pass := range 2 {
			v, out, err := forwardChecked(fw, in, start)
			if err != nil {
				t.Fatalf("pass %d: %v", pass, err)
			}
			c := fw.Counters()
			if n := uint64(pass + 1); c.RXPackets != n || c.TXPackets+c.Replies+c.Dropped() != n {
				t.Fatalf("pass %d: %d received, %d sent + %d replies + %d dropped", pass, c.RXPackets, c.TXPackets, c.Replies, c.Dropped())
			}
			if v != VerdictDrop {
				if _, err := checkOutput(in, out, v); err != nil {
					t.Fatalf("pass %d, verdict %v: %v", pass, v, err)
				}
			}
			if pass == 0 {
				first = v
				if out != nil {
					firstMAC = out[0:6]
				}
				continue
			}
			if v != first || (out != nil && !bytes.Equal(out[0:6], firstMAC)) {
				t.Fatalf("second pass: verdict %v to %x, first %v to %x", v, out, first, firstMAC)
			}
		}
	})
}

// withIPv4Checksum fixes the header checksum of the IPv4 packet in frame,
// if it has one where the test can find it (after at most two VLAN tags), so
// that every IPv4 header a forwarded frame carries must verify. The
// forwarder does not check the client's checksum: the backend's stack does.
func withIPv4Checksum(frame []byte) []byte {
	off := 12
	for tags := 0; ; tags++ {
		if len(frame) < off+2 {
			return frame
		}
		et := binary.BigEndian.Uint16(frame[off:])
		if (et != etVLAN && et != etQinQ) || tags == 2 {
			if et != etIPv4 {
				return frame
			}
			break
		}
		off += 4
	}
	ip := frame[off+2:]
	if len(ip) < 20 {
		return frame
	}
	hl := int(ip[0]&0xf) * 4
	if hl < 20 || hl > len(ip) {
		return frame
	}
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ^slowSum(ip[:hl]))
	return frame
}
