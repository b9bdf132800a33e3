package firmware

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// IP protocol numbers the programs know about.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// Address families as stored in map keys (the IP version number).
const (
	familyV4 = 4
	familyV6 = 6
)

// ErrInvalidVIP reports a VIP that the redirect program could never match.
var ErrInvalidVIP = errors.New("invalid vip")

// VIP is one virtual service the appliance owns: traffic to Addr with IP
// protocol Proto and destination port Port. Port 0 means every port of the
// address and protocol, and is the only port allowed for protocols without
// ports (everything but TCP, UDP and SCTP). An IPv4-mapped IPv6 address is
// the IPv4 address it maps.
type VIP struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

// String formats v as address:port/protocol, with * for port 0.
func (v VIP) String() string {
	port := "*"
	if v.Port != 0 {
		port = strconv.Itoa(int(v.Port))
	}
	host := v.Addr.String()
	if v.Addr.Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + port + "/" + protoName(v.Proto)
}

func protoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

func hasPorts(p uint8) bool { return p == ProtoTCP || p == ProtoUDP || p == ProtoSCTP }

// normalize validates v and returns its canonical form.
func (v VIP) normalize() (VIP, error) {
	if !v.Addr.IsValid() {
		return VIP{}, fmt.Errorf("%w %v: no address", ErrInvalidVIP, v)
	}
	if v.Addr.Zone() != "" {
		return VIP{}, fmt.Errorf("%w %v: address has a zone", ErrInvalidVIP, v)
	}
	v.Addr = v.Addr.Unmap()
	if v.Addr.IsUnspecified() {
		return VIP{}, fmt.Errorf("%w %v: unspecified address", ErrInvalidVIP, v)
	}
	if v.Proto == 0 {
		return VIP{}, fmt.Errorf("%w %v: protocol 0", ErrInvalidVIP, v)
	}
	if v.Port != 0 && !hasPorts(v.Proto) {
		return VIP{}, fmt.Errorf("%w %v: protocol %s has no ports, use port 0", ErrInvalidVIP, v, protoName(v.Proto))
	}
	return v, nil
}

// compareVIP orders VIPs by address, protocol, port.
func compareVIP(a, b VIP) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

// vipKey builds the vips map key of a normalized VIP.
func vipKey(v VIP) redirectVipKey {
	k := addrKey(v.Addr, v.Proto)
	k.Port = htons(v.Port)
	return k
}

// addrKey builds a vip_addrs map key: address, family and protocol (0 for
// the address as a whole), port 0.
func addrKey(a netip.Addr, proto uint8) redirectVipKey {
	k := redirectVipKey{Proto: proto}
	if a.Is4() {
		b := a.As4()
		copy(k.Addr[:], b[:])
		k.Family = familyV4
	} else {
		k.Addr = a.As16()
		k.Family = familyV6
	}
	return k
}

// htons returns p in network byte order as the generated key types hold it
// (they are written to the kernel in host byte order).
func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}
