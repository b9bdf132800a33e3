package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
	"github.com/weirlb/weir/packet"
)

func TestDecapUsage(t *testing.T) {
	code, out, _ := runCLI(t, "decap", "-h")
	if code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	for _, want := range []string{"-gue-port", "-vip", "-allow-source", "-interval", `vips = ["192.0.2.1"`, `allow_sources = ["10.0.0.1"`, "foreign_src", "SIGTERM"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}

// Mistakes on the command line exit 2 with a message that names them,
// before anything is loaded or attached.
func TestDecapFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "no interface: give -i IFACE"},
		{[]string{"-i", "eth0"}, "no VIPs: give -vip"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.300"}, `-vip: "192.0.2.300" is not an IP address`},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1, 2001:db8::1,192.0.2.1"}, "-vip: 192.0.2.1 is listed twice"},
		{[]string{"-i", "eth0", "-vip", "224.0.0.1"}, "224.0.0.1 cannot be a VIP: not a unicast address"},
		{[]string{"-i", "eth0", "-vip", "::ffff:192.0.2.1"}, "write it as 192.0.2.1"},
		{[]string{"-i", "eth0", "-vip", "fe80::1%eth0"}, "a VIP has no zone"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-gue-port", "70000"}, "-gue-port 70000: want 0 (no GUE) to 65535"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-gue-port", "-1"}, "invalid value"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-mode", "driver"}, `-mode: xdp attach mode "driver"`},
		{[]string{"-i", "eth0/1", "-vip", "192.0.2.1"}, `-i "eth0/1": not a valid interface name`},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-interval", "-1s"}, "-interval -1s: want 0 or more"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "eth1"}, `unexpected argument "eth1"`},
		{[]string{"-c", filepath.Join(t.TempDir(), "missing.toml")}, "no such file"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-allow-source", "10.0.0.300/32"}, `-allow-source: "10.0.0.300/32" is not an IP prefix`},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-allow-source", "lb1"}, `-allow-source: "lb1" is not an IP address or prefix`},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-allow-source", "10.0.0.1", "-allow-source", "fd00::/64,10.0.0.1/8"},
			"-allow-source: 10.0.0.1/8 has address bits set past /8: write 10.0.0.0/8 for the network, or 10.0.0.1 for the one address"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-allow-source", "10.0.0.1", "-allow-source", "10.0.0.1/32"}, "-allow-source: 10.0.0.1/32 is listed twice"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-allow-source", "::ffff:10.0.0.0/104"}, "IPv4-mapped IPv6, which no outer source is: write it in IPv4"},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-allow-source", "fe80::1%eth0"}, `"fe80::1%eth0": an outer source has no zone`},
		{[]string{"-i", "eth0", "-vip", "192.0.2.1", "-allow-source", "10.0.0.0/33"}, `"10.0.0.0/33" is not an IP prefix`},
	} {
		code, out, errOut := runCLI(t, append([]string{"decap"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.msg) || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %q", tc.args, code, out, errOut, tc.msg)
		}
	}
}

// A missing interface is found before any BPF is loaded (so this runs
// without privileges too) and exits 1.
func TestDecapNoSuchInterface(t *testing.T) {
	code, out, errOut := runCLI(t, "decap", "-i", "weirnosuch0", "-vip", "192.0.2.1")
	if code != 1 || !strings.Contains(errOut, "interface weirnosuch0") || out != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// Each bad file gives exactly these problems, in file order, each with its
// file:line:col and key.
func TestDecapFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // with F standing for the file's path
	}{
		{"syntax", "interface = \"eth0\"\nvips = [\"192.0.2.1\"\n", []string{"F:2:20: expected a comma (',') or array terminator (']'), but got end of file"}},
		{"unknown key", "interface = \"eth0\"\n  intervall = \"1s\"\nvips = [\"192.0.2.1\"]\n",
			[]string{"F:2:3: intervall: unknown key (known: interface, vips, allow_sources, gue_port, xdp_mode)"}},
		{"unknown table", "interface = \"eth0\"\nvips = [\"192.0.2.1\"]\n\n[vip]\naddress = \"192.0.2.1\"\n",
			[]string{"F:4:2: vip: unknown table (known: interface, vips, allow_sources, gue_port, xdp_mode)"}},
		{"types", "interface = 5\nvips = \"192.0.2.1\"\ngue_port = \"5555\"\nxdp_mode = true\n", []string{
			"F:1:13: interface: must be a string, not an integer",
			`F:2:8: vips: must be an array of addresses, like ["192.0.2.1", "2001:db8::1"], not a string`,
			"F:3:12: gue_port: must be an integer, not a string",
			"F:4:12: xdp_mode: must be a string, not a boolean",
		}},
		{"values", "interface = \"eth0/1\"\ngue_port = 70000\nxdp_mode = \"driver\"\nvips = [\"192.0.2.1\"]\n", []string{
			`F:1:13: interface: "eth0/1" is not a valid interface name`,
			"F:2:12: gue_port: 70000 is out of range 0 (no GUE) to 65535",
			`F:3:12: xdp_mode: "driver" is not one of "auto", "native" or "generic"`,
		}},
		{"vip elements", "interface = \"eth0\"\nvips = [\n  \"192.0.2.1\", # the web VIP\n  \"2001:db8::1\",\n    \"192.0.2.300\",\n  'fe80::1%eth0', 7,\n  \"2001:db8::1\",\n]\n", []string{
			`F:5:5: vips[2]: "192.0.2.300" is not an IP address`,
			`F:6:3: vips[3]: "fe80::1%eth0": a VIP has no zone`,
			"F:6:19: vips[4]: must be a string, not an integer",
			"F:7:3: vips[5]: 2001:db8::1 is already vips[1]",
		}},
		{"vip repeated after a bad one", "interface = \"eth0\"\nvips = [\"192.0.2.300\", \"192.0.2.1\", \"192.0.2.1\"]\n", []string{
			`F:2:9: vips[0]: "192.0.2.300" is not an IP address`,
			"F:2:37: vips[2]: 192.0.2.1 is already vips[1]",
		}},
		{"allow_sources type", "interface = \"eth0\"\nvips = [\"192.0.2.1\"]\nallow_sources = \"10.0.0.1\"\n", []string{
			`F:3:17: allow_sources: must be an array of prefixes or addresses, like ["10.0.0.1", "fd00:1::/64"], not a string`,
		}},
		{"allow_sources elements", "interface = \"eth0\"\nvips = [\"192.0.2.1\"]\nallow_sources = [\n  \"10.0.0.1/8\", # a typo\n  \"fd00::/64\", 7,\n    \"10.0.0.300\",\n  \"fd00::/64\",\n]\n", []string{
			"F:4:3: allow_sources[0]: 10.0.0.1/8 has address bits set past /8: write 10.0.0.0/8 for the network, or 10.0.0.1 for the one address",
			"F:5:16: allow_sources[2]: must be a string, not an integer",
			`F:6:5: allow_sources[3]: "10.0.0.300" is not an IP address or prefix`,
			"F:7:3: allow_sources[4]: fd00::/64 is already allow_sources[1]",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "decap.toml")
			if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, probs := parseDecapFile(path, []byte(tc.text))
			want := make([]string, len(tc.want))
			for i, w := range tc.want {
				want[i] = path + strings.TrimPrefix(w, "F")
			}
			if !reflect.DeepEqual(probs, want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(probs, "\n"), strings.Join(want, "\n"))
			}
			// The command prints the same and exits 2.
			code, _, errOut := runCLI(t, "decap", "-c", path)
			if code != 2 || !strings.HasPrefix(errOut, strings.Join(want, "\n")+"\n") {
				t.Errorf("weir decap -c: exit %d, stderr:\n%s", code, errOut)
			}
		})
	}
}

// Settings come from the file, and flags given on the command line win;
// without a file, the flags' defaults apply.
func TestDecapSettings(t *testing.T) {
	text := "# backend decap\ninterface = \"eth1\"\nvips = [\"192.0.2.1\", \"2001:db8::1\"]\nallow_sources = [\"10.0.0.1\", \"fd00:1::/64\"]\ngue_port = 6080\nxdp_mode = \"generic\"\n"
	file, probs := parseDecapFile("decap.toml", []byte(text))
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	vips := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	allow := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00:1::/64")}
	want := decapSettings{iface: "eth1", vips: vips, allow: allow, guePort: 6080, mode: firmware.AttachGeneric}
	if !reflect.DeepEqual(file, want) {
		t.Fatalf("file: %+v, want %+v", file, want)
	}
	for _, tc := range []struct {
		name string
		file *decapSettings
		set  decapFlags
		want decapSettings
	}{
		{"file alone", &file, decapFlags{mode: "auto"}, want},
		{"flags win", &file,
			decapFlags{iface: "eth2", vips: "198.51.100.1", guePort: 0, mode: "native", set: map[string]bool{"i": true, "vip": true, "gue-port": true, "mode": true}},
			decapSettings{iface: "eth2", vips: []netip.Addr{netip.MustParseAddr("198.51.100.1")}, allow: allow, guePort: 0, mode: firmware.AttachNative}},
		{"one flag", &file, decapFlags{guePort: 5555, mode: "auto", set: map[string]bool{"gue-port": true}},
			decapSettings{iface: "eth1", vips: vips, allow: allow, guePort: 5555, mode: firmware.AttachGeneric}},
		{"allow-source repeated and comma-separated wins", &file,
			decapFlags{allow: []string{"192.0.2.64/26", " fd00:2::1 , 198.51.100.0/24,"}, mode: "auto", set: map[string]bool{"allow-source": true}},
			decapSettings{iface: "eth1", vips: vips, allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.64/26"),
				netip.MustParsePrefix("fd00:2::1/128"), netip.MustParsePrefix("198.51.100.0/24")}, guePort: 6080, mode: firmware.AttachGeneric}},
		{"empty allow-source clears the file's list", &file, decapFlags{allow: []string{""}, mode: "auto", set: map[string]bool{"allow-source": true}},
			decapSettings{iface: "eth1", vips: vips, guePort: 6080, mode: firmware.AttachGeneric}},
		{"flags alone", nil, decapFlags{iface: "eth0", vips: "192.0.2.1,2001:db8::1", guePort: 5555, mode: "auto", set: map[string]bool{"i": true, "vip": true}},
			decapSettings{iface: "eth0", vips: vips, guePort: appliance.DefaultGUEPort, mode: firmware.AttachAuto}},
	} {
		got, err := mergeDecapSettings(tc.file, tc.set)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// syncBuffer is an io.Writer that a running command and the test may use
// at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// decapRun is `weir decap` running in-process inside a namespace.
type decapRun struct {
	out, errb syncBuffer
	cancel    context.CancelFunc
	done      chan int
	code      int
	exited    bool
}

// startDecapCommand runs `weir decap args...` on a thread inside ns (the
// command acts in the calling thread's namespace) and waits until it says
// it attached. The command is stopped at cleanup if the test has not.
func startDecapCommand(t *testing.T, ns *lab.NS, args ...string) *decapRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &decapRun{cancel: cancel, done: make(chan int, 1)}
	go func() {
		code := -1
		err := ns.Do(func() error {
			code = run(ctx, &env{stdout: &r.out, stderr: &r.errb, getenv: func(string) string { return "" }}, append([]string{"decap"}, args...))
			return nil
		})
		if err != nil {
			fmt.Fprintf(&r.errb, "enter namespace: %v\n", err)
		}
		r.done <- code
	}()
	t.Cleanup(func() { r.stop(t) })
	deadline := time.After(10 * time.Second)
	for !strings.Contains(r.out.String(), "weir decap: attached to ") {
		select {
		case code := <-r.done:
			r.code, r.exited = code, true
			t.Fatalf("weir decap exited %d before attaching:\n%s%s", code, r.out.String(), r.errb.String())
		case <-deadline:
			t.Fatalf("weir decap did not attach within 10s:\n%s%s", r.out.String(), r.errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return r
}

// stop sends the command its SIGTERM (cancels its context) and returns its
// exit code.
func (r *decapRun) stop(t *testing.T) int {
	t.Helper()
	if r.exited {
		return r.code
	}
	r.cancel()
	select {
	case r.code = <-r.done:
		r.exited = true
	case <-time.After(10 * time.Second):
		t.Fatalf("weir decap did not stop within 10s of its signal:\n%s", r.out.String())
	}
	return r.code
}

// hup sends the test process SIGHUP, which the running command has caught
// (it registers for it before anything else), and waits until its output
// holds one more line containing want.
func (r *decapRun) hup(t *testing.T, want string) {
	t.Helper()
	count := func() int { return strings.Count(r.out.String()+r.errb.String(), want) }
	before := count()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() == before {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within 10s of SIGHUP:\n%s%s", want, r.out.String(), r.errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lastCounters parses the last periodic counters line the command printed
// for iface.
func (r *decapRun) lastCounters(t *testing.T, iface string) map[string]uint64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(iface) + `: (decapsulated=.*)$`)
	all := re.FindAllStringSubmatch(r.out.String(), -1)
	if len(all) == 0 {
		t.Fatalf("no counters line for %s yet:\n%s", iface, r.out.String())
	}
	return parseCounterFields(t, all[len(all)-1][1])
}

func parseCounterFields(t *testing.T, line string) map[string]uint64 {
	t.Helper()
	c := map[string]uint64{}
	for _, kv := range strings.Fields(line) {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("counter %q: %v", kv, err)
		}
		c[k] = n
	}
	return c
}

var decapFinal = regexp.MustCompile(`(?m)^(\S+): final: (.*)$`)

// finalCounters parses the counters the command printed at exit.
func (r *decapRun) finalCounters(t *testing.T) map[string]uint64 {
	t.Helper()
	m := decapFinal.FindStringSubmatch(r.out.String())
	if m == nil {
		t.Fatalf("no final counters in the output:\n%s", r.out.String())
	}
	return parseCounterFields(t, m[2])
}

func decapTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(decapTestWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type decapTestWriter struct{ t *testing.T }

func (w decapTestWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestDecapCommandLab: `weir decap`, run from a settings file inside the
// only backend's namespace of a routed lab, is the whole backend side of
// an IPv4 ipip VIP and an IPv6 gue VIP: real HTTP requests through the
// appliance succeed, the counters it prints show every packet the
// appliance sent decapsulated (IPv4-in-IPv4 and GUE, nothing else), and
// once it is stopped the program is gone from the interface and requests
// fail, so it was the command that made them work. Its allow-list names the
// appliance; run again with one that does not, requests fail and the
// appliance's packets count as foreign_src.
func TestDecapCommandLab(t *testing.T) {
	testutil.RequirePrivileged(t)
	r, err := lab.NewRouted(lab.RoutedConfig{Prefix: "weirdecap", Backends: 1, Queues: 2,
		VIPs: []netip.Addr{lab.DefaultVIP4, lab.DefaultVIP6}, FabricMTU: labFabricMTU})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("remove lab: %v", err)
		}
	})
	if err := r.StartHTTP(); err != nil {
		t.Fatal(err)
	}
	be := r.Backends[0]
	const guePort = 6080
	settings := filepath.Join(t.TempDir(), "decap.toml")
	text := fmt.Sprintf("# the backend side of weir's lab VIPs\ninterface = %q\nvips = [%q, %q]\nallow_sources = [%q, %q]\ngue_port = %d\n",
		be.NIC.Name, r.VIP4, r.VIP6, r.Appliance.Addr4, r.Appliance.Addr6, guePort)
	if err := os.WriteFile(settings, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := startDecapCommand(t, be.NS, "-c", settings, "-interval", "100ms")
	if strings.Contains(cmd.errb.String(), "warning") {
		t.Errorf("the VIPs are on the backend's lo, yet:\n%s", cmd.errb.String())
	}

	m := appliance.Model{LocalAddr4: r.Appliance.Addr4, LocalAddr6: r.Appliance.Addr6}
	for _, v := range []struct {
		addr netip.Addr
		mode appliance.Mode
	}{{r.VIP4, appliance.ModeIPIP}, {r.VIP6, appliance.ModeGUE}} {
		m.VIPs = append(m.VIPs, appliance.VIP{
			VIPKey: appliance.VIPKey{Addr: v.addr, Proto: packet.ProtoTCP, Port: r.Port},
			Name:   v.mode.String(), Mode: v.mode, MTU: labFabricMTU, GUEPort: guePort,
			Backends: []appliance.Backend{{Addr: be.Addr(v.addr), Name: be.Name, Weight: 1}},
		})
	}
	var app *appliance.Appliance
	err = r.Appliance.NS.Do(func() error {
		var err error
		app, err = appliance.Start(appliance.Options{Interface: r.Appliance.NIC.Name, Logger: decapTestLogger(t)}, m)
		return err
	})
	if err != nil {
		t.Fatalf("start appliance: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			app.Stop()
		}
	})

	get := func(vip netip.Addr, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, lab.URL(vip, r.Port, "/"), nil)
		if err != nil {
			return err
		}
		resp, err := r.HTTPClient().Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(body)); got != be.Name {
			return fmt.Errorf("answered by %q, want %q", got, be.Name)
		}
		return nil
	}
	const n = 20
	for _, vip := range []netip.Addr{r.VIP4, r.VIP6} {
		for i := range n {
			if err := get(vip, 5*time.Second); err != nil {
				t.Fatalf("request %d to %s: %v", i, vip, err)
			}
		}
	}
	time.Sleep(250 * time.Millisecond) // the last FINs, and a periodic line
	stopped = true
	st, err := app.Stop()
	if err != nil {
		t.Errorf("stop appliance: %v", err)
	}

	if code := cmd.stop(t); code != 0 {
		t.Fatalf("weir decap exited %d:\n%s%s", code, cmd.out.String(), cmd.errb.String())
	}
	out := cmd.out.String()
	t.Logf("weir decap printed:\n%s", out)
	periodic := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(be.NIC.Name) + `: decapsulated=\d+ `)
	if !periodic.MatchString(out) || !strings.Contains(out, "weir decap: detached from "+be.NIC.Name) {
		t.Errorf("output lacks periodic counters or the detach line")
	}
	if want := fmt.Sprintf("; from %s/32, %s/128 only\n", r.Appliance.Addr4, r.Appliance.Addr6); !strings.Contains(out, want) {
		t.Errorf("the attached line does not say %q", want)
	}
	c := cmd.finalCounters(t)
	if _, ok := c["foreign_src"]; !ok {
		t.Errorf("final counters %v lack foreign_src", c)
	}
	if c["ipip"] < n || c["gue"] < n || c["ip6ip6"]+c["ip6in4"]+c["ip4in6"] != 0 || c["malformed"]+c["failed"]+c["dropped_ecn"]+c["foreign_src"] != 0 {
		t.Errorf("final counters %v: want at least %d IPIP and %d GUE packets and nothing else decapsulated or broken", c, n, n)
	}
	if c["decapsulated"] != st.Total.TXPackets {
		t.Errorf("backend decapsulated %d packets, the appliance sent %d", c["decapsulated"], st.Total.TXPackets)
	}

	// Detached: no XDP program left on the interface...
	l, err := be.NS.Netlink().LinkByName(be.NIC.Name)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("XDP program %d still attached to %s", x.ProgId, be.NIC.Name)
	}
	// ...and without it the backend cannot take the traffic (these
	// kernels have no ipip module). The appliance is back up for this.
	err = r.Appliance.NS.Do(func() error {
		var err error
		app, err = appliance.Start(appliance.Options{Interface: r.Appliance.NIC.Name, Logger: decapTestLogger(t)}, m)
		return err
	})
	if err != nil {
		t.Fatalf("restart appliance: %v", err)
	}
	stopped = false
	if err := get(r.VIP4, time.Second); err == nil {
		t.Errorf("a request through ipip succeeded with the decap program detached")
	}

	// With an allow-list that leaves the appliance out, its tunnel
	// packets reach the stack untouched and the request fails as above.
	writeSettings := func(allow string) {
		t.Helper()
		text := fmt.Sprintf("interface = %q\nvips = [%q]\nallow_sources = [%s]\n", be.NIC.Name, r.VIP4, allow)
		if err := os.WriteFile(settings, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeSettings(`"198.51.100.0/24"`)
	foreign := startDecapCommand(t, be.NS, "-c", settings, "-interval", "50ms")
	if err := get(r.VIP4, time.Second); err == nil {
		t.Errorf("a request through ipip succeeded from a source outside the allow-list")
	}
	time.Sleep(150 * time.Millisecond) // a periodic line after the attempt
	c0 := foreign.lastCounters(t, be.NIC.Name)
	if c0["foreign_src"] == 0 || c0["decapsulated"] != 0 {
		t.Errorf("counters with the appliance outside the allow-list %v: want foreign sources and nothing decapsulated", c0)
	}

	// SIGHUP with a broken file: refused, the running list stays.
	writeSettings(`"198.51.100.0/24", "not-a-prefix"`)
	foreign.hup(t, "reload refused")
	if !strings.Contains(foreign.errb.String(), "allow_sources[1]") {
		t.Errorf("the refused reload does not name the bad entry:\n%s", foreign.errb.String())
	}
	if err := get(r.VIP4, time.Second); err == nil {
		t.Errorf("a request through ipip succeeded after a refused reload")
	}
	// SIGHUP with the appliance in the list: applied in place, requests
	// go through without the program being detached.
	writeSettings(fmt.Sprintf("%q", r.Appliance.Addr4))
	foreign.hup(t, "weir decap: reloaded: ")
	for i := range n {
		if err := get(r.VIP4, 5*time.Second); err != nil {
			t.Fatalf("request %d after the reload that allows the appliance: %v", i, err)
		}
	}
	if code := foreign.stop(t); code != 0 {
		t.Fatalf("weir decap exited %d:\n%s%s", code, foreign.out.String(), foreign.errb.String())
	}
	c = foreign.finalCounters(t)
	if c["foreign_src"] < c0["foreign_src"] {
		t.Errorf("foreign_src went down across the reloads: %d -> %d", c0["foreign_src"], c["foreign_src"])
	}
	if c["ipip"] < n || c["failed"]+c["malformed"] != 0 {
		t.Errorf("final counters after the reload %v: want at least %d IPIP packets decapsulated, nothing broken", c, n)
	}
}

// A reload may change the VIPs and the allow-list only: a new interface,
// attach mode or GUE port is refused before the program is touched.
func TestDecapReloadRefusesFixedSettings(t *testing.T) {
	cur := decapSettings{iface: "eth0", vips: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, guePort: 6080, mode: firmware.AttachAuto}
	for _, tc := range []struct {
		change func(*decapSettings)
		want   string
	}{
		{func(s *decapSettings) { s.iface = "eth1" }, "interface changed from eth0 to eth1: restart"},
		{func(s *decapSettings) { s.mode = firmware.AttachGeneric }, "xdp_mode changed"},
		{func(s *decapSettings) { s.guePort = 5555 }, "gue_port changed from 6080 to 5555: restart"},
	} {
		next := cur
		tc.change(&next)
		// A nil program: a refused reload must not reach it.
		if err := applyDecapSettings(nil, cur, next); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("applyDecapSettings: %v, want an error containing %q", err, tc.want)
		}
	}
}
