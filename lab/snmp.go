package lab

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// SNMP holds a namespace's protocol counters from /proc/net/snmp. TCP
// counters cover IPv4 and IPv6; IP, ICMP and UDP are IPv4 only. Counters
// are cumulative since the namespace was created: compare two readings.
type SNMP struct {
	IP   IPStats
	ICMP ICMPStats
	TCP  TCPStats
	UDP  UDPStats
}

// IPStats is the "Ip:" group of /proc/net/snmp.
type IPStats struct {
	Forwarding, DefaultTTL                               int64
	InReceives, InHdrErrors, InAddrErrors, ForwDatagrams uint64
	InUnknownProtos, InDiscards, InDelivers              uint64
	OutRequests, OutDiscards, OutNoRoutes                uint64
	ReasmTimeout, ReasmReqds, ReasmOKs, ReasmFails       uint64
	FragOKs, FragFails, FragCreates                      uint64
}

// ICMPStats is part of the "Icmp:" group of /proc/net/snmp.
type ICMPStats struct {
	InMsgs, InErrors, InCsumErrors, InDestUnreachs       uint64
	OutMsgs, OutErrors, OutDestUnreachs                  uint64
	InEchos, InEchoReps, OutEchos, OutEchoReps           uint64
	InTimeExcds, OutTimeExcds, InRedirects, OutRedirects uint64
}

// TCPStats is the "Tcp:" group of /proc/net/snmp. InCsumErrors counts
// segments the stack dropped for a bad checksum (the symptom of partial
// checksums lost on the way through XDP); OutRsts counts resets sent (the
// symptom of a stack that saw a segment of a flow it does not know).
type TCPStats struct {
	RtoAlgorithm, RtoMin, RtoMax, MaxConn      int64
	ActiveOpens, PassiveOpens, AttemptFails    uint64
	EstabResets, CurrEstab, InSegs, OutSegs    uint64
	RetransSegs, InErrs, OutRsts, InCsumErrors uint64
}

// UDPStats is the "Udp:" group of /proc/net/snmp.
type UDPStats struct {
	InDatagrams, NoPorts, InErrors, OutDatagrams uint64
	RcvbufErrors, SndbufErrors, InCsumErrors     uint64
	IgnoredMulti, MemErrors                      uint64
}

// SNMP reads the namespace's /proc/net/snmp. It opens
// /proc/thread-self/net/snmp from a thread inside the namespace: /proc/net
// follows the namespace of the process's main thread, not of the caller.
func (n *NS) SNMP() (SNMP, error) {
	var s SNMP
	err := n.Do(func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		s, err = parseSNMP(f)
		return err
	})
	if err != nil {
		return SNMP{}, fmt.Errorf("lab: %s: read snmp: %w", n.name, err)
	}
	return s, nil
}

// parseSNMP parses the /proc/net/snmp format: for each group, a line of
// field names and a line of values, both starting with "Group:". Fields are
// matched by name, so kernels that add or drop fields parse fine; the Tcp
// group must be there, since a file without it is not /proc/net/snmp.
func parseSNMP(r io.Reader) (SNMP, error) {
	var s SNMP
	fields := map[string]map[string]any{
		"Ip": {
			"Forwarding": &s.IP.Forwarding, "DefaultTTL": &s.IP.DefaultTTL,
			"InReceives": &s.IP.InReceives, "InHdrErrors": &s.IP.InHdrErrors,
			"InAddrErrors": &s.IP.InAddrErrors, "ForwDatagrams": &s.IP.ForwDatagrams,
			"InUnknownProtos": &s.IP.InUnknownProtos, "InDiscards": &s.IP.InDiscards,
			"InDelivers": &s.IP.InDelivers, "OutRequests": &s.IP.OutRequests,
			"OutDiscards": &s.IP.OutDiscards, "OutNoRoutes": &s.IP.OutNoRoutes,
			"ReasmTimeout": &s.IP.ReasmTimeout, "ReasmReqds": &s.IP.ReasmReqds,
			"ReasmOKs": &s.IP.ReasmOKs, "ReasmFails": &s.IP.ReasmFails,
			"FragOKs": &s.IP.FragOKs, "FragFails": &s.IP.FragFails, "FragCreates": &s.IP.FragCreates,
		},
		"Icmp": {
			"InMsgs": &s.ICMP.InMsgs, "InErrors": &s.ICMP.InErrors, "InCsumErrors": &s.ICMP.InCsumErrors,
			"InDestUnreachs": &s.ICMP.InDestUnreachs, "OutMsgs": &s.ICMP.OutMsgs,
			"OutErrors": &s.ICMP.OutErrors, "OutDestUnreachs": &s.ICMP.OutDestUnreachs,
			"InEchos": &s.ICMP.InEchos, "InEchoReps": &s.ICMP.InEchoReps,
			"OutEchos": &s.ICMP.OutEchos, "OutEchoReps": &s.ICMP.OutEchoReps,
			"InTimeExcds": &s.ICMP.InTimeExcds, "OutTimeExcds": &s.ICMP.OutTimeExcds,
			"InRedirects": &s.ICMP.InRedirects, "OutRedirects": &s.ICMP.OutRedirects,
		},
		"Tcp": {
			"RtoAlgorithm": &s.TCP.RtoAlgorithm, "RtoMin": &s.TCP.RtoMin, "RtoMax": &s.TCP.RtoMax,
			"MaxConn": &s.TCP.MaxConn, "ActiveOpens": &s.TCP.ActiveOpens,
			"PassiveOpens": &s.TCP.PassiveOpens, "AttemptFails": &s.TCP.AttemptFails,
			"EstabResets": &s.TCP.EstabResets, "CurrEstab": &s.TCP.CurrEstab,
			"InSegs": &s.TCP.InSegs, "OutSegs": &s.TCP.OutSegs, "RetransSegs": &s.TCP.RetransSegs,
			"InErrs": &s.TCP.InErrs, "OutRsts": &s.TCP.OutRsts, "InCsumErrors": &s.TCP.InCsumErrors,
		},
		"Udp": {
			"InDatagrams": &s.UDP.InDatagrams, "NoPorts": &s.UDP.NoPorts,
			"InErrors": &s.UDP.InErrors, "OutDatagrams": &s.UDP.OutDatagrams,
			"RcvbufErrors": &s.UDP.RcvbufErrors, "SndbufErrors": &s.UDP.SndbufErrors,
			"InCsumErrors": &s.UDP.InCsumErrors, "IgnoredMulti": &s.UDP.IgnoredMulti,
			"MemErrors": &s.UDP.MemErrors,
		},
	}

	sc := bufio.NewScanner(r)
	var header []string // names of the group whose values come next
	line := 0
	sawTCP := false
	for sc.Scan() {
		line++
		group, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			return SNMP{}, fmt.Errorf("line %d: no group name", line)
		}
		words := strings.Fields(rest)
		if header == nil {
			header = append([]string{group}, words...)
			continue
		}
		if header[0] != group {
			return SNMP{}, fmt.Errorf("line %d: group %s has names but no values", line, header[0])
		}
		names := header[1:]
		header = nil
		if len(words) != len(names) {
			return SNMP{}, fmt.Errorf("line %d: %s has %d values for %d names", line, group, len(words), len(names))
		}
		want := fields[group]
		if group == "Tcp" {
			sawTCP = true
		}
		for i, name := range names {
			switch p := want[name].(type) {
			case *uint64:
				v, err := strconv.ParseUint(words[i], 10, 64)
				if err != nil {
					return SNMP{}, fmt.Errorf("line %d: %s %s: %w", line, group, name, err)
				}
				*p = v
			case *int64:
				v, err := strconv.ParseInt(words[i], 10, 64)
				if err != nil {
					return SNMP{}, fmt.Errorf("line %d: %s %s: %w", line, group, name, err)
				}
				*p = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return SNMP{}, err
	}
	if header != nil {
		return SNMP{}, fmt.Errorf("group %s has names but no values", header[0])
	}
	if !sawTCP {
		return SNMP{}, fmt.Errorf("no Tcp group")
	}
	return s, nil
}
