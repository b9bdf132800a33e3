package appliance

// Encapsulation end to end on routed labs (lab.NewRouted): the client
// reaches the VIP through the appliance, which sends IPIP or GUE through a
// router to backends that take the outer headers off with the project's
// decap program; replies go from the backends through the router straight
// to the client. These tests cover path MTU in both directions and large
// transfers. Every transfer is checked byte for byte against lab's pattern.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
	"github.com/weirlb/weir/packet"
)

// encapLabConfig is one routed lab with a running appliance.
type encapLabConfig struct {
	mode      Mode
	family    int // 4 or 6: the VIP's and the backends' family
	fabricMTU int // lab.RoutedConfig.FabricMTU
	returnMTU int // lab.RoutedConfig.ReturnMTU
	vip       VIP // MTU, TooBig and ICMPErrors are taken from here
}

// encapLab is a routed lab with HTTP backends that decapsulate, and an
// appliance serving one VIP on it.
type encapLab struct {
	*lab.Routed
	vip     netip.Addr
	model   Model
	app     *Appliance
	decaps  map[string]*firmware.Decap // by backend name
	stopped bool
}

// encapBackends is how many backends the VIP has: more than one, so an ICMP
// error that reached the wrong backend would be ignored there and show.
const encapBackends = 2

func newEncapLab(t *testing.T, c encapLabConfig) *encapLab {
	t.Helper()
	testutil.RequirePrivileged(t)
	r, err := lab.NewRouted(lab.RoutedConfig{
		Prefix: "weirencap", Backends: encapBackends, Queues: 2,
		VIPs:      []netip.Addr{lab.DefaultVIP4, lab.DefaultVIP6},
		FabricMTU: c.fabricMTU, ReturnMTU: c.returnMTU,
	})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("remove lab: %v", err)
		}
	})
	if err := r.StartHTTP(); err != nil {
		t.Fatalf("start backends: %v", err)
	}
	l := &encapLab{Routed: r, vip: r.VIP4, decaps: map[string]*firmware.Decap{}}
	if c.family == 6 {
		l.vip = r.VIP6
	}

	for _, b := range r.Backends {
		err := b.NS.Do(func() error {
			d, err := firmware.LoadDecap(firmware.DecapConfig{VIPs: []netip.Addr{l.vip}, GUEPort: DefaultGUEPort})
			if err != nil {
				return err
			}
			l.decaps[b.Name] = d
			_, err = d.Attach(b.NIC.Index, firmware.AttachAuto)
			return err
		})
		if err != nil {
			t.Fatalf("decap program on %s: %v", b.Name, err)
		}
	}
	t.Cleanup(func() {
		for _, d := range l.decaps {
			d.Close()
		}
	})

	v := c.vip
	v.VIPKey = VIPKey{Addr: l.vip, Proto: packet.ProtoTCP, Port: r.Port}
	v.Name, v.Mode = "web", c.mode
	for _, b := range r.Backends {
		v.Backends = append(v.Backends, Backend{Addr: b.Addr(l.vip), Name: b.Name, Weight: 1})
	}
	l.model = Model{LocalAddr4: r.Appliance.Addr4, LocalAddr6: r.Appliance.Addr6, VIPs: []VIP{v}}
	err = r.Appliance.NS.Do(func() error {
		var err error
		l.app, err = Start(Options{Interface: r.Appliance.NIC.Name, Logger: testLogger(t)}, l.model)
		return err
	})
	if err != nil {
		t.Fatalf("start appliance: %v", err)
	}
	t.Cleanup(func() {
		if !l.stopped {
			l.stop(t)
		}
	})
	return l
}

// republish publishes the lab's VIP edited by fn; established flows stay.
func (l *encapLab) republish(t *testing.T, fn func(*VIP)) {
	t.Helper()
	m := l.model.clone()
	fn(&m.VIPs[0])
	if err := l.app.Publish(m); err != nil {
		t.Fatalf("publish: %v", err)
	}
	l.model = m
}

func (l *encapLab) stop(t *testing.T) Stats {
	t.Helper()
	l.stopped = true
	st, err := l.app.Stop()
	if err != nil {
		t.Errorf("stop appliance: %v", err)
	}
	// Every frame free or lent to the kernel, none left in a worker's hands.
	if f := st.Frames; f.Total == 0 || f.InHand != 0 || f.Free+f.KernelRX+f.KernelTX != f.Total {
		t.Errorf("after stop, frames do not add up: %+v", f)
	}
	return st
}

func (l *encapLab) stats(t *testing.T) Counters {
	t.Helper()
	st, err := l.app.Stats()
	if err != nil {
		t.Fatalf("appliance stats: %v", err)
	}
	return st.Total
}

// settle waits until the workers have published counters that no longer
// change, or 5 s (a stalled connection may keep retransmitting), and
// returns them.
func (l *encapLab) settle(t *testing.T) Counters {
	t.Helper()
	// Two equal reads further apart than the workers' publishing delay:
	// anything forwarded before the first was published by the second.
	prev := l.stats(t)
	for range 25 {
		time.Sleep(StatsMaxAge + 50*time.Millisecond)
		c := l.stats(t)
		if c == prev {
			return c
		}
		prev = c
	}
	t.Logf("counters still moving after 5 s")
	return prev
}

// download fetches n bytes of the pattern of seed from the VIP over a
// fresh connection, checking every byte. It returns how many bytes arrived
// in order and intact, and the backend that served them.
func (l *encapLab) download(ctx context.Context, n int64, seed uint64) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, lab.URL(l.vip, l.Port, fmt.Sprintf("/bytes?n=%d&seed=%d", n, seed)), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := l.HTTPClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	backend := resp.Header.Get("X-Weir-Backend")
	if resp.StatusCode != http.StatusOK {
		return 0, backend, fmt.Errorf("status %s", resp.Status)
	}
	got, err := lab.CheckPattern(resp.Body, seed, n)
	return got, backend, err
}

// upload sends n bytes of the pattern of seed to the VIP over a fresh
// connection; the backend checks every byte and answers "ok <n>".
func (l *encapLab) upload(ctx context.Context, n int64, seed uint64) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		lab.URL(l.vip, l.Port, fmt.Sprintf("/upload?n=%d&seed=%d", n, seed)), lab.NewPattern(seed, n))
	if err != nil {
		return "", err
	}
	req.ContentLength = n
	resp, err := l.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	backend := resp.Header.Get("X-Weir-Backend")
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return backend, err
	}
	if got, want := strings.TrimSpace(string(body)), fmt.Sprintf("ok %d", n); resp.StatusCode != http.StatusOK || got != want {
		return backend, fmt.Errorf("backend answered %s %q, want %q", resp.Status, got, want)
	}
	return backend, nil
}

// icmpStats reads the ICMP counters of a namespace that matter here: for
// IPv4 destination-unreachable (fragmentation needed is one), for IPv6
// packet-too-big, sent and received.
type icmpStats struct{ out, in uint64 }

func readICMP(t *testing.T, ns *lab.NS, family int) icmpStats {
	t.Helper()
	if family == 4 {
		s, err := ns.SNMP()
		if err != nil {
			t.Fatal(err)
		}
		return icmpStats{out: s.ICMP.OutDestUnreachs, in: s.ICMP.InDestUnreachs}
	}
	var st icmpStats
	err := ns.Do(func() error {
		// /proc/net follows the main thread's namespace; thread-self is
		// this thread's.
		f, err := os.Open("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			name, val, ok := strings.Cut(strings.Join(strings.Fields(sc.Text()), " "), " ")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				continue
			}
			switch name {
			case "Icmp6OutPktTooBigs":
				st.out = n
			case "Icmp6InPktTooBigs":
				st.in = n
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatalf("%s: read snmp6: %v", ns, err)
	}
	return st
}

// encapCases are the encapsulating modes and families.
var encapCases = []struct {
	mode   Mode
	family int
}{{ModeIPIP, 4}, {ModeGUE, 4}, {ModeIPIP, 6}, {ModeGUE, 6}}

// stallWindow is how long a transfer that path MTU discovery cannot rescue
// is given: the backend or client retransmits its full-size segments four
// or five times in it (RTO from 200 ms, doubling), to no avail.
const stallWindow = 5 * time.Second

// TestEncapReturnPathPMTU: the return path from the backends to the client
// narrows to 1400 bytes at the router, which answers the backends'
// 1500-byte segments with ICMP fragmentation-needed / packet-too-big sent
// to their source, the VIP, and thus to the appliance.
//
// With icmp_errors = "drop" a 20 MB download stalls: the backend never
// learns the path MTU, the client gets nothing past the response headers in
// stallWindow, and the appliance counts the router's errors as
// icmp_error_dropped. Published with "forward" (same lab, same backends),
// the appliance sends each error to the backend owning the flow, that
// backend's stack (and only that one's) receives it, and the same download
// completes intact.
func TestEncapReturnPathPMTU(t *testing.T) {
	if testing.Short() {
		t.Skip("each case waits out a stalled transfer")
	}
	for _, c := range encapCases {
		t.Run(fmt.Sprintf("%s/ipv%d", c.mode, c.family), func(t *testing.T) {
			const n = 20 << 20
			l := newEncapLab(t, encapLabConfig{mode: c.mode, family: c.family, fabricMTU: 1600, returnMTU: 1400,
				vip: VIP{MTU: 1600, ICMPErrors: ICMPDrop}})

			// Forwarding off: stall.
			router0 := readICMP(t, l.Router.NS, c.family)
			ctx, cancel := context.WithTimeout(context.Background(), stallWindow)
			got, backend, err := l.download(ctx, n, 1)
			cancel()
			if err == nil {
				t.Fatalf("download of %d bytes completed with ICMP errors dropped: the return path does not narrow", n)
			}
			t.Logf("icmp_errors=drop: %d of %d bytes from %s in %v, then %v", got, n, backend, stallWindow, err)
			if got > 64<<10 {
				t.Errorf("%d bytes arrived although the backend never learned the path MTU", got)
			}
			c1 := l.settle(t)
			router1 := readICMP(t, l.Router.NS, c.family)
			if router1.out == router0.out {
				t.Fatalf("the router sent no ICMP error about the 1500-byte replies")
			}
			if c1.Drops[DropICMPError] == 0 || c1.ICMPErrors != 0 {
				t.Errorf("icmp_error_dropped %d, ICMP errors forwarded %d: want some dropped and none forwarded", c1.Drops[DropICMPError], c1.ICMPErrors)
			}
			before := map[string]icmpStats{}
			for _, b := range l.Backends {
				before[b.Name] = readICMP(t, b.NS, c.family)
				if before[b.Name].in != 0 {
					t.Errorf("%s received %d ICMP errors while the appliance dropped them", b.Name, before[b.Name].in)
				}
			}

			// Forwarding on: the same download completes.
			l.republish(t, func(v *VIP) { v.ICMPErrors = ICMPForward })
			start := time.Now()
			ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
			got, backend, err = l.download(ctx, n, 2)
			cancel()
			if err != nil {
				t.Fatalf("icmp_errors=forward: download: %d of %d bytes from %s: %v", got, n, backend, err)
			}
			el := time.Since(start)
			c2 := l.settle(t)
			router2 := readICMP(t, l.Router.NS, c.family)
			t.Logf("icmp_errors=forward: %d bytes from %s in %v (%.0f Mbit/s); router sent %d ICMP errors, appliance forwarded %d",
				n, backend, el.Round(time.Millisecond), float64(n)*8/el.Seconds()/1e6, router2.out-router1.out, c2.ICMPErrors)
			if router2.out == router1.out || c2.ICMPErrors == 0 {
				t.Errorf("router sent %d ICMP errors, appliance forwarded %d: want both above 0", router2.out-router1.out, c2.ICMPErrors)
			}
			if c2.Drops[DropICMPError] != c1.Drops[DropICMPError] {
				t.Errorf("ICMP errors still dropped after the policy changed: %d -> %d", c1.Drops[DropICMPError], c2.Drops[DropICMPError])
			}
			// The error reached the backend that served the download, and
			// no other.
			for _, b := range l.Backends {
				in := readICMP(t, b.NS, c.family).in - before[b.Name].in
				switch {
				case b.Name == backend && in == 0:
					t.Errorf("%s served the download but received no ICMP error", b.Name)
				case b.Name != backend && in != 0:
					t.Errorf("%s received %d ICMP errors about a flow it does not own", b.Name, in)
				}
			}
		})
	}
}

// TestEncapClientTooBig: nothing behind the appliance carries more than
// 1500 bytes (the VIP's mtu = 1500), so a client's full-size segment no
// longer fits once encapsulated. With too_big = "drop" a 20 MB upload
// stalls and the appliance counts too_big drops; published with "icmp", the
// appliance answers such packets with ICMP fragmentation-needed /
// packet-too-big from the VIP, the client lowers its path MTU, and a
// 20 MB upload completes intact.
func TestEncapClientTooBig(t *testing.T) {
	if testing.Short() {
		t.Skip("each case waits out a stalled transfer")
	}
	for _, c := range encapCases {
		t.Run(fmt.Sprintf("%s/ipv%d", c.mode, c.family), func(t *testing.T) {
			const n = 20 << 20
			l := newEncapLab(t, encapLabConfig{mode: c.mode, family: c.family, fabricMTU: 1500,
				vip: VIP{MTU: 1500, TooBig: TooBigDrop}})

			c0 := l.settle(t)
			ctx, cancel := context.WithTimeout(context.Background(), stallWindow)
			backend, err := l.upload(ctx, n, 3)
			cancel()
			if err == nil {
				t.Fatalf("upload of %d bytes to %s completed with too_big = drop: full-size packets fit after all", n, backend)
			}
			c1 := l.settle(t)
			t.Logf("too_big=drop: upload failed after %v: %v; appliance sent %d bytes to backends, dropped %d too big",
				stallWindow, err, c1.TXBytes-c0.TXBytes, c1.Drops[DropTooBig]-c0.Drops[DropTooBig])
			if c1.Drops[DropTooBig] == c0.Drops[DropTooBig] || c1.Replies != 0 {
				t.Errorf("too_big drops %d, replies %d: want some drops and no reply", c1.Drops[DropTooBig]-c0.Drops[DropTooBig], c1.Replies)
			}
			if sent := c1.TXBytes - c0.TXBytes; sent > 256<<10 {
				t.Errorf("%d bytes reached the backends although no full-size segment fits", sent)
			}

			client0 := readICMP(t, l.Client.NS, c.family)
			l.republish(t, func(v *VIP) { v.TooBig = TooBigICMP })
			start := time.Now()
			ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
			backend, err = l.upload(ctx, n, 4)
			cancel()
			if err != nil {
				t.Fatalf("too_big=icmp: upload to %s: %v", backend, err)
			}
			el := time.Since(start)
			c2 := l.settle(t)
			client1 := readICMP(t, l.Client.NS, c.family)
			t.Logf("too_big=icmp: %d bytes to %s in %v (%.0f Mbit/s); appliance sent %d ICMP replies, client received %d",
				n, backend, el.Round(time.Millisecond), float64(n)*8/el.Seconds()/1e6, c2.Replies, client1.in-client0.in)
			if c2.Replies == 0 || client1.in == client0.in {
				t.Errorf("appliance replies %d, client received %d ICMP errors: want both above 0", c2.Replies, client1.in-client0.in)
			}
			if c2.TXBytes-c1.TXBytes < n {
				t.Errorf("appliance sent %d bytes to backends for a %d-byte upload", c2.TXBytes-c1.TXBytes, n)
			}
		})
	}
}

// TestEncapLargeTransfers: 100 MiB each way over one connection through
// each encapsulating mode and family, every byte checked. The upload is
// the one that crosses the appliance (full-size frames, encapsulated by
// the workers, decapsulated by the backend's program); the download sends
// only the client's ACKs through it and the data straight back. The
// counters must add up: no drop, and at least the upload's bytes sent to
// backends and decapsulated there.
func TestEncapLargeTransfers(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 800 MiB")
	}
	for _, c := range encapCases {
		t.Run(fmt.Sprintf("%s/ipv%d", c.mode, c.family), func(t *testing.T) {
			const n = 100 << 20
			l := newEncapLab(t, encapLabConfig{mode: c.mode, family: c.family, fabricMTU: 1600, vip: VIP{MTU: 1600}})
			c0 := l.settle(t)

			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			backend, err := l.upload(ctx, n, 5)
			cancel()
			if err != nil {
				t.Fatalf("upload to %s: %v", backend, err)
			}
			up := time.Since(start)
			c1 := l.settle(t)

			start = time.Now()
			ctx, cancel = context.WithTimeout(context.Background(), 120*time.Second)
			got, backend2, err := l.download(ctx, n, 6)
			cancel()
			if err != nil {
				t.Fatalf("download from %s: %d of %d bytes: %v", backend2, got, n, err)
			}
			down := time.Since(start)
			c2 := l.settle(t)

			var decap uint64
			for _, d := range l.decaps {
				dc, err := d.Counters()
				if err != nil {
					t.Fatal(err)
				}
				decap += dc.Decapsulated()
				if dc.Malformed+dc.Failed+dc.DroppedECN != 0 {
					t.Errorf("decap counters %+v: broken packets", dc)
				}
			}
			t.Logf("upload %d MiB to %s in %v (%.0f Mbit/s, %d packets through the appliance); download from %s in %v (%.0f Mbit/s, %d ACK packets through it)",
				n>>20, backend, up.Round(time.Millisecond), float64(n)*8/up.Seconds()/1e6, c1.TXPackets-c0.TXPackets,
				backend2, down.Round(time.Millisecond), float64(n)*8/down.Seconds()/1e6, c2.TXPackets-c1.TXPackets)
			if c2.Dropped() != 0 || c2.Replies != 0 {
				t.Errorf("drops %v, replies %d: want none", c2.Drops, c2.Replies)
			}
			if c1.TXBytes-c0.TXBytes < n {
				t.Errorf("appliance sent %d bytes to backends for a %d-byte upload", c1.TXBytes-c0.TXBytes, n)
			}
			if decap != c2.TXPackets {
				t.Errorf("backends decapsulated %d packets, the appliance sent %d", decap, c2.TXPackets)
			}
		})
	}
}
