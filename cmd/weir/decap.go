package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/internal/tomlpos"
)

func init() {
	commands["decap"] = command{summary: "on a backend: take weir's IPIP/GUE headers off VIP traffic (XDP)", run: runDecap}
}

// decapDefaultInterval is how often a running `weir decap` prints its
// counters unless told otherwise.
const decapDefaultInterval = time.Minute

func decapUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: weir decap -i IFACE -vip ADDR[,ADDR...] [-allow-source PREFIX[,PREFIX...]] [-gue-port N]")
	fmt.Fprintln(w, "                  [-mode auto|native|generic] [-interval D]")
	fmt.Fprintln(w, "       weir decap -c FILE [flags]")
	fmt.Fprintln(w, "\nRun on a backend of an ipip or gue VIP. Attaches weir's decap XDP program to IFACE, the")
	fmt.Fprintln(w, "interface the appliance's encapsulated packets arrive on: IPv4-in-IPv4, IPv6-in-IPv6,")
	fmt.Fprintln(w, "IPv4-in-IPv6, IPv6-in-IPv4 and GUE (variant 1, UDP port -gue-port) packets whose inner")
	fmt.Fprintln(w, "destination is one of the VIPs lose their outer headers and reach the stack as the client")
	fmt.Fprintln(w, "sent them; everything else passes untouched. The VIPs must be addresses of this host (on lo).")
	fmt.Fprintln(w, "Give -allow-source the load balancers' addresses or prefixes: tunnel packets to a VIP from any")
	fmt.Fprintln(w, "other outer source then pass untouched (the stack drops them) and count as foreign_src. Without")
	fmt.Fprintln(w, "it, any host that can reach IFACE can send to the VIPs in a client's name.")
	fmt.Fprintln(w, "It runs until SIGINT or SIGTERM, printing the program's counters every -interval and at")
	fmt.Fprintln(w, "exit. The program is detached when weir exits, even if it is killed (bpf_link). SIGHUP")
	fmt.Fprintln(w, "re-reads the -c file and changes the VIPs and allow_sources in place (flags still win); a")
	fmt.Fprintln(w, "file with problems, or a new interface, xdp_mode or gue_port, is refused and the running")
	fmt.Fprintln(w, "settings stay. Needs root or CAP_BPF and CAP_NET_ADMIN.")
	fmt.Fprintln(w, "\nThe -c file holds the same settings; flags given on the command line win:")
	fmt.Fprintln(w, `  interface = "eth0"`)
	fmt.Fprintln(w, `  vips = ["192.0.2.1", "2001:db8::1"]`)
	fmt.Fprintln(w, `  allow_sources = ["10.0.0.1", "fd00:1::/64"]   # empty or absent: any source`)
	fmt.Fprintln(w, `  gue_port = 5555        # 0: IPIP only`)
	fmt.Fprintln(w, `  xdp_mode = "auto"      # "native" or "generic"`)
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// decapSettings is what `weir decap` runs with, from the file and the flags.
type decapSettings struct {
	iface   string
	vips    []netip.Addr
	allow   []netip.Prefix // outer sources allowed to tunnel; empty: any
	guePort uint16
	mode    firmware.AttachMode
}

// decapFlags holds the raw flag values until they are merged with the file.
type decapFlags struct {
	config, iface, vips, mode string
	allow                     []string // -allow-source values, each comma-separated
	guePort                   uint
	interval                  time.Duration
	set                       map[string]bool // flags given on the command line
}

func runDecap(ctx context.Context, e *env, args []string) int {
	// SIGHUP re-reads the -c file; caught before anything else, as its
	// default action kills the process.
	hup := make(chan os.Signal, 4)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	fs := flag.NewFlagSet("decap", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and usage are printed below, to the right stream
	var f decapFlags
	fs.StringVar(&f.config, "c", "", "settings `FILE` (TOML: interface, vips, allow_sources, gue_port, xdp_mode)")
	fs.StringVar(&f.iface, "i", "", "`IFACE` the encapsulated packets arrive on")
	fs.StringVar(&f.vips, "vip", "", "comma-separated VIP `ADDRs` to decapsulate for (IPv4 and IPv6)")
	fs.Func("allow-source", "decapsulate only from these outer source `PREFIXes` (or addresses): the load balancers'; comma-separated, repeatable; none: any source", func(v string) error {
		f.allow = append(f.allow, v)
		return nil
	})
	fs.UintVar(&f.guePort, "gue-port", uint(appliance.DefaultGUEPort), "UDP destination `PORT` of GUE packets, as the VIPs' gue_port; 0 decapsulates IPIP only")
	fs.StringVar(&f.mode, "mode", "auto", "XDP attach `MODE`: auto (native, else generic), native or generic")
	fs.DurationVar(&f.interval, "interval", decapDefaultInterval, "print the counters every `D`; 0 prints them only at exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			decapUsage(e.stdout, fs)
			return 0
		}
		fmt.Fprintf(e.stderr, "weir decap: %v\n\n", err)
		decapUsage(e.stderr, fs)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "weir decap: unexpected argument %q\n\n", fs.Arg(0))
		decapUsage(e.stderr, fs)
		return 2
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if f.interval < 0 {
		fmt.Fprintf(e.stderr, "weir decap: -interval %v: want 0 or more\n", f.interval)
		return 2
	}

	s, err := loadDecapSettings(e.stderr, f)
	if err != nil {
		fmt.Fprintf(e.stderr, "weir decap: %v\n", err)
		return 2
	}
	var reload func() (decapSettings, error)
	if f.config != "" {
		reload = func() (decapSettings, error) { return loadDecapSettings(e.stderr, f) }
	}
	if err := serveDecap(ctx, e, s, f.interval, hup, reload); err != nil {
		fmt.Fprintf(e.stderr, "weir decap: %v\n", err)
		return 1
	}
	return 0
}

// loadDecapSettings reads the -c file, if any, and applies the flags given
// on the command line. The file's problems are printed to w, each with its
// position, and reported as one error.
func loadDecapSettings(w io.Writer, f decapFlags) (decapSettings, error) {
	var file *decapSettings
	if f.config != "" {
		data, err := os.ReadFile(f.config)
		if err != nil {
			return decapSettings{}, err
		}
		s, probs := parseDecapFile(f.config, data)
		if len(probs) > 0 {
			for _, p := range probs {
				fmt.Fprintln(w, p)
			}
			return decapSettings{}, fmt.Errorf("%s: %d problem%s", f.config, len(probs), plural(len(probs)))
		}
		file = &s
	}
	return mergeDecapSettings(file, f)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// mergeDecapSettings starts from the file (if any) and applies the flags
// given on the command line, then checks that nothing required is missing.
func mergeDecapSettings(file *decapSettings, f decapFlags) (decapSettings, error) {
	s := decapSettings{guePort: appliance.DefaultGUEPort, mode: firmware.AttachAuto}
	if file != nil {
		s = *file
	}
	if f.set["i"] {
		if err := checkDecapIface(f.iface); err != nil {
			return s, fmt.Errorf("-i %q: %w", f.iface, err)
		}
		s.iface = f.iface
	}
	if f.set["vip"] {
		vips, err := parseFlagList([]string{f.vips}, parseDecapVIP)
		if err != nil {
			return s, fmt.Errorf("-vip: %w", err)
		}
		s.vips = vips
	}
	if f.set["allow-source"] {
		allow, err := parseFlagList(f.allow, parseAllowSource)
		if err != nil {
			return s, fmt.Errorf("-allow-source: %w", err)
		}
		s.allow = allow
	}
	if f.set["gue-port"] {
		if f.guePort > 65535 {
			return s, fmt.Errorf("-gue-port %d: want 0 (no GUE) to 65535", f.guePort)
		}
		s.guePort = uint16(f.guePort)
	}
	if f.set["mode"] || file == nil {
		m, err := firmware.ParseAttachMode(f.mode)
		if err != nil {
			return s, fmt.Errorf("-mode: %w", err)
		}
		s.mode = m
	}
	switch {
	case s.iface == "":
		return s, errors.New("no interface: give -i IFACE, or interface in the -c file")
	case len(s.vips) == 0:
		return s, errors.New("no VIPs: give -vip ADDR[,ADDR...], or vips in the -c file")
	}
	return s, nil
}

// parseDecapVIP parses one VIP as the decap program matches it: a plain
// unicast IPv4 or IPv6 address.
func parseDecapVIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, fmt.Errorf("%q is not an IP address", s)
	case a.Zone() != "":
		return a, fmt.Errorf("%q: a VIP has no zone", s)
	case a.Is4In6():
		return a, fmt.Errorf("%q is an IPv4-mapped IPv6 address: write it as %s", s, a.Unmap())
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return a, fmt.Errorf("%s cannot be a VIP: not a unicast address", a)
	}
	return a, nil
}

// parseAllowSource parses one allowed outer source: a prefix, or an address
// standing for itself alone. A prefix with address bits set past its length
// is refused rather than widened: in an allow-list it is more likely a typo
// for the one address than a request for the whole network.
func parseAllowSource(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("%q is not an IP prefix", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			return p, fmt.Errorf("%q is not an IP address or prefix", s)
		case a.Zone() != "":
			return p, fmt.Errorf("%q: an outer source has no zone", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	switch {
	case p.Addr().Is4In6():
		return p, fmt.Errorf("%q is IPv4-mapped IPv6, which no outer source is: write it in IPv4", s)
	case p != p.Masked():
		return p, fmt.Errorf("%s has address bits set past /%d: write %s for the network, or %s for the one address",
			p, p.Bits(), p.Masked(), p.Addr())
	}
	return p, nil
}

// checkDecapIface checks an interface name the way the kernel would.
// parseFlagList parses the comma-separated items of every value of a
// repeatable flag, skipping empty ones; an item given twice is an error.
func parseFlagList[T comparable](values []string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			x, err := parse(item)
			if err != nil {
				return nil, err
			}
			if slices.Contains(out, x) {
				return nil, fmt.Errorf("%v is listed twice", x)
			}
			out = append(out, x)
		}
	}
	return out, nil
}

func checkDecapIface(s string) error {
	if s == "" || len(s) > 15 || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n") {
		return errors.New("not a valid interface name")
	}
	return nil
}

// serveDecap attaches the program and waits for ctx, printing counters. It
// acts in the network namespace of the calling thread.
func serveDecap(ctx context.Context, e *env, s decapSettings, interval time.Duration, hup <-chan os.Signal, reload func() (decapSettings, error)) (err error) {
	ifc, err := net.InterfaceByName(s.iface)
	if err != nil {
		return fmt.Errorf("interface %s: %w", s.iface, err)
	}
	warnForeignVIPs(e.stderr, s.vips)
	d, err := firmware.LoadDecap(firmware.DecapConfig{
		VIPs: s.vips, GUEPort: s.guePort, MaxVIPs: max(firmware.DefaultMaxVIPs, 2*len(s.vips)),
		AllowSources: s.allow, MaxAllowSources: max(firmware.DefaultMaxAllowSources, 2*len(s.allow)),
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	att, err := d.Attach(ifc.Index, s.mode)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "weir decap: attached to %s (%s XDP): %s\n", ifc.Name, att.Mode(), describeDecap(s))
	if len(s.allow) == 0 {
		fmt.Fprintf(e.stderr, "weir decap: warning: no -allow-source: any host that can reach %s can tunnel packets to the VIPs in a client's name\n", ifc.Name)
	}
	if nerr := att.NativeErr(); nerr != nil {
		fmt.Fprintf(e.stderr, "weir decap: native XDP refused, running in generic mode: %v\n", nerr)
	}

	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			c, err := d.Counters()
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: %s\n", ifc.Name, formatDecapCounters(c))
		case <-hup:
			if reload == nil {
				fmt.Fprintln(e.stderr, "weir decap: SIGHUP: no -c file to re-read; the settings stay as they are")
				continue
			}
			next, err := reload()
			if err == nil {
				err = applyDecapSettings(d, s, next)
			}
			if err != nil {
				fmt.Fprintf(e.stderr, "weir decap: reload refused, the running settings stay in force: %v\n", err)
				continue
			}
			s = next
			warnForeignVIPs(e.stderr, s.vips)
			fmt.Fprintf(e.stdout, "weir decap: reloaded: %s\n", describeDecap(s))
		case <-ctx.Done():
			c, cerr := d.Counters()
			if err := att.Close(); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "weir decap: detached from %s\n", ifc.Name)
			if cerr != nil {
				return cerr
			}
			fmt.Fprintf(e.stdout, "%s: final: %s\n", ifc.Name, formatDecapCounters(c))
			return nil
		}
	}
}

// describeDecap says what the program decapsulates, for the attach and
// reload lines.
func describeDecap(s decapSettings) string {
	what := "IPIP only (GUE off)"
	if s.guePort != 0 {
		what = fmt.Sprintf("IPIP and GUE on UDP port %d", s.guePort)
	}
	vips := make([]string, len(s.vips))
	for i, a := range s.vips {
		vips[i] = a.String()
	}
	from := "from any source"
	if len(s.allow) > 0 {
		srcs := make([]string, len(s.allow))
		for i, p := range s.allow {
			srcs[i] = p.String()
		}
		from = "from " + strings.Join(srcs, ", ") + " only"
	}
	return fmt.Sprintf("VIPs %s; %s; %s", strings.Join(vips, ", "), what, from)
}

// applyDecapSettings moves the attached program from settings cur to next.
// The interface, attach mode and GUE port are fixed while it is attached;
// a change to any of them is refused and nothing is applied. The allow-list
// goes first, so that VIPs added with a narrower list are never open to the
// old one.
func applyDecapSettings(d *firmware.Decap, cur, next decapSettings) error {
	switch {
	case next.iface != cur.iface:
		return fmt.Errorf("interface changed from %s to %s: restart weir decap to apply it", cur.iface, next.iface)
	case next.mode != cur.mode:
		return fmt.Errorf("xdp_mode changed from %s to %s: restart weir decap to apply it", cur.mode, next.mode)
	case next.guePort != cur.guePort:
		return fmt.Errorf("gue_port changed from %d to %d: restart weir decap to apply it", cur.guePort, next.guePort)
	}
	if err := d.SetAllowSources(next.allow); err != nil {
		return err
	}
	if err := d.SetVIPs(next.vips); err != nil {
		// Put the old list back: the running settings stay whole.
		return errors.Join(err, d.SetAllowSources(cur.allow))
	}
	return nil
}

// formatDecapCounters prints every counter as name=value, so scripts can
// pick fields out.
func formatDecapCounters(c firmware.DecapCounters) string {
	return fmt.Sprintf("decapsulated=%d ipip=%d ip6in4=%d ip4in6=%d ip6ip6=%d gue=%d passed=%d not_vip=%d foreign_src=%d malformed=%d ce_marked=%d dropped_ecn=%d failed=%d",
		c.Decapsulated(), c.IPIP, c.IP6in4, c.IP4in6, c.IP6IP6, c.GUE, c.Passed, c.NotVIP, c.ForeignSource, c.Malformed, c.CEMarked, c.DroppedECN, c.Failed)
}

// warnForeignVIPs says which VIPs are not addresses of this host: their
// decapsulated packets would be routed on or dropped, not answered.
func warnForeignVIPs(w io.Writer, vips []netip.Addr) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return
	}
	local := map[netip.Addr]bool{}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			local[p.Addr().Unmap()] = true
		}
	}
	for _, v := range vips {
		if !local[v] {
			bits := 32
			if v.Is6() {
				bits = 128
			}
			fmt.Fprintf(w, "weir decap: warning: VIP %s is not an address of this host, so the stack will not answer it: ip addr add %s/%d dev lo\n", v, v, bits)
		}
	}
}

// The -c file: a flat TOML table.
var decapFileKeys = []string{"interface", "vips", "allow_sources", "gue_port", "xdp_mode"}

// decapProblem is one thing wrong with a -c file.
type decapProblem struct {
	at       tomlpos.Pos
	key, msg string
}

// decodeList decodes the array v of key k (its value at valAt), each element a
// string that parse turns into a T. A value that is not an array, an element
// that is not a string or that parse refuses, and a repeat of an earlier
// element go to bad, each at its own position; want says what the array
// holds. It returns the elements that were good, in order.
func decodeList[T comparable](k string, v any, pos tomlpos.Positions, valAt tomlpos.Pos,
	bad func(key string, at tomlpos.Pos, format string, args ...any), want string, parse func(string) (T, error)) []T {
	list, ok := v.([]any)
	if !ok {
		bad(k, valAt, "must be an array of %s, not %s", want, tomlpos.TypeName(v))
		return nil
	}
	var out []T
	first := map[T]int{} // where each value was first written
	for i, e := range list {
		name := tomlpos.Index(k, i)
		at := pos.Value(name)
		str, ok := e.(string)
		if !ok {
			bad(name, at, "must be a string, not %s", tomlpos.TypeName(e))
			continue
		}
		x, err := parse(str)
		if err != nil {
			bad(name, at, "%v", err)
			continue
		}
		if j, dup := first[x]; dup {
			bad(name, at, "%v is already %s", x, tomlpos.Index(k, j))
			continue
		}
		first[x] = i
		out = append(out, x)
	}
	return out
}

// parseDecapFile decodes a -c file. Every problem comes back formatted as
// file:line:col: key: message, in file order.
func parseDecapFile(path string, data []byte) (decapSettings, []string) {
	s := decapSettings{guePort: appliance.DefaultGUEPort, mode: firmware.AttachAuto}
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		msg, at, ok := tomlpos.ParseError(data, err)
		if !ok {
			return s, []string{fmt.Sprintf("%s: %v", path, err)}
		}
		return s, []string{fmt.Sprintf("%s:%d:%d: %s", path, at.Line, at.Col, msg)}
	}
	pos := tomlpos.Scan(data)
	var probs []decapProblem
	bad := func(key string, at tomlpos.Pos, format string, args ...any) {
		probs = append(probs, decapProblem{at: at, key: key, msg: fmt.Sprintf(format, args...)})
	}
	for k, v := range doc {
		// A key written as a table header or as the first part of a
		// dotted key has no value position: problems go to the key.
		keyAt, valAt := pos.Key(tomlpos.Join("", k)), pos.Value(tomlpos.Join("", k))
		switch k {
		case "interface":
			str, ok := v.(string)
			if !ok {
				bad(k, valAt, "must be a string, not %s", tomlpos.TypeName(v))
			} else if err := checkDecapIface(str); err != nil {
				bad(k, valAt, "%q is %v", str, err)
			} else {
				s.iface = str
			}
		case "vips":
			s.vips = decodeList(k, v, pos, valAt, bad, `addresses, like ["192.0.2.1", "2001:db8::1"]`, parseDecapVIP)
		case "allow_sources":
			s.allow = decodeList(k, v, pos, valAt, bad, `prefixes or addresses, like ["10.0.0.1", "fd00:1::/64"]`, parseAllowSource)
		case "gue_port":
			n, ok := v.(int64)
			switch {
			case !ok:
				bad(k, valAt, "must be an integer, not %s", tomlpos.TypeName(v))
			case n < 0 || n > 65535:
				bad(k, valAt, "%d is out of range 0 (no GUE) to 65535", n)
			default:
				s.guePort = uint16(n)
			}
		case "xdp_mode":
			str, ok := v.(string)
			if !ok {
				bad(k, valAt, "must be a string, not %s", tomlpos.TypeName(v))
				break
			}
			m, err := firmware.ParseAttachMode(str)
			if err != nil {
				bad(k, valAt, "%q is not one of \"auto\", \"native\" or \"generic\"", str)
				break
			}
			s.mode = m
		default:
			what := "key"
			switch v.(type) {
			case map[string]any:
				what = "table"
			case []map[string]any:
				what = "array of tables"
			}
			bad(k, keyAt, "unknown %s (known: %s)", what, strings.Join(decapFileKeys, ", "))
		}
	}
	// Maps iterate in random order: report in file order.
	slices.SortFunc(probs, func(a, b decapProblem) int {
		if a.at.Line != b.at.Line {
			return a.at.Line - b.at.Line
		}
		if a.at.Col != b.at.Col {
			return a.at.Col - b.at.Col
		}
		return strings.Compare(a.key, b.key)
	})
	out := make([]string, len(probs))
	for i, p := range probs {
		where := path
		if p.at.Line > 0 {
			where = fmt.Sprintf("%s:%d:%d", path, p.at.Line, p.at.Col)
		}
		out[i] = fmt.Sprintf("%s: %s: %s", where, p.key, p.msg)
	}
	return s, out
}
