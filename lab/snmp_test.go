package lab

import (
	"strings"
	"testing"
)

// A /proc/net/snmp of Linux 6.18 (OutTransmits is newer than the struct and
// must be ignored), trimmed to the groups the parser reads plus Tcp's extra
// neighbours.
const snmpFixture = `Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 1 64 1806 0 3 12 0 0 1806 1262 0 0 0 0 0 0 0 7 0 1262
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs InRedirects InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks InAddrMaskReps OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps OutAddrMasks OutAddrMaskReps
Icmp: 1 0 0 1 0 0 0 0 0 0 0 0 0 0 9 0 0 0 8 0 0 0 0 0 0 0 0 0 0
IcmpMsg: InType3 OutType3
IcmpMsg: 1 8
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 57 41 2 3 4 18446744073709551615 9000 11 12 13 14
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 21 22 23 24 25 26 27 28 29
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
`

func TestParseSNMP(t *testing.T) {
	s, err := parseSNMP(strings.NewReader(snmpFixture))
	if err != nil {
		t.Fatal(err)
	}
	want := SNMP{
		IP: IPStats{Forwarding: 1, DefaultTTL: 64, InReceives: 1806, InAddrErrors: 3, ForwDatagrams: 12,
			InDelivers: 1806, OutRequests: 1262, FragFails: 7},
		ICMP: ICMPStats{InMsgs: 1, InDestUnreachs: 1, OutMsgs: 9, OutDestUnreachs: 8},
		TCP: TCPStats{RtoAlgorithm: 1, RtoMin: 200, RtoMax: 120000, MaxConn: -1, ActiveOpens: 57,
			PassiveOpens: 41, AttemptFails: 2, EstabResets: 3, CurrEstab: 4, InSegs: 1<<64 - 1,
			OutSegs: 9000, RetransSegs: 11, InErrs: 12, OutRsts: 13, InCsumErrors: 14},
		UDP: UDPStats{InDatagrams: 21, NoPorts: 22, InErrors: 23, OutDatagrams: 24, RcvbufErrors: 25,
			SndbufErrors: 26, InCsumErrors: 27, IgnoredMulti: 28, MemErrors: 29},
	}
	if s != want {
		t.Errorf("parseSNMP:\n got %+v\nwant %+v", s, want)
	}
}

func TestParseSNMPErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":            "",
		"no tcp":           "Udp: InDatagrams\nUdp: 1\n",
		"no colon":         "Tcp RtoMin\nTcp 1\n",
		"count mismatch":   "Tcp: RtoMin OutRsts\nTcp: 1\n",
		"names only":       "Tcp: RtoMin\n",
		"names twice":      "Ip: Forwarding\nTcp: RtoMin\nTcp: 1\n",
		"bad number":       "Tcp: OutRsts\nTcp: many\n",
		"negative counter": "Tcp: OutRsts\nTcp: -1\n",
	} {
		if s, err := parseSNMP(strings.NewReader(in)); err == nil {
			t.Errorf("%s: parsed as %+v, want an error", name, s)
		}
	}
}
