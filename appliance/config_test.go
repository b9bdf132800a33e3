package appliance

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/hashing"
	"github.com/weirlb/weir/internal/tomlpos"
	"github.com/weirlb/weir/packet"
)

// testCPUs stands in for the machine's CPUs, so results do not depend on
// where the tests run.
var testCPUs = []int{0, 1, 2, 3}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *ConfigError", err, err)
	}
	return ce.Problems
}

// Each bad file holds exactly one problem; the test checks where it is
// reported (line:col, or nothing for problems without a place), the key,
// and a fragment of the message.
var badConfigs = []struct {
	file, pos, key, msg string
}{
	{"syntax", "3:12", "", "expected value"},
	{"duplicate_key", "4:1", "", "'appliance.interface' has already been defined"},
	{"unknown_key", "4:1", "appliance.queue", `unknown key (did you mean "queues"?)`},
	{"unknown_table", "5:2", "metric", `unknown table (did you mean "metrics"?)`},
	{"unknown_inline_key", "9:12", "vip[0].health.tpye", `unknown key (did you mean "type"?)`},
	{"missing_interface", "2:2", "appliance.interface", `required: the interface weir serves`},
	{"bad_interface", "3:13", "appliance.interface", `"eth1/2" is not a valid interface name`},
	{"not_a_table", "2:13", "appliance", "must be a table, not a string"},
	{"vip_not_array", "2:7", "vip", "must be an array of tables ([[vip]]), not a string"},
	{"wrong_type", "8:8", "vip[0].port", "must be an integer, not a string"},
	{"queues_range", "4:10", "appliance.queues", "-1 is out of range 0..1024"},
	{"cpu_unavailable", "4:12", "appliance.cpus[1]", "CPU 4000 is not available to weir (it may use 0-3)"},
	{"cpu_twice", "4:12", "appliance.cpus[1]", "CPU 0 is already queue 0's"},
	{"cpus_queues", "5:8", "appliance.cpus", "lists 1 CPU(s) but queues = 2"},
	{"xdp_mode", "4:12", "appliance.xdp_mode", `"driver" is not one of "auto", "native" or "generic"`},
	{"zero_copy_generic", "5:13", "appliance.zero_copy", `cannot be met with xdp_mode = "generic"`},
	{"frame_size", "4:14", "appliance.frame_size", "3000: must be 2048 or 4096"},
	{"frame_size_negative", "4:14", "appliance.frame_size", "-4096: must be 2048 or 4096"},
	{"frames_pow2", "4:20", "appliance.frames_per_queue", "5000 is not a power of two"},
	{"frames_ring", "5:20", "appliance.frames_per_queue", "2048 is less than twice ring_size (2048)"},
	{"headroom_small", "4:12", "appliance.headroom", "32 is out of range 48..2047"},
	{"headroom_room", "5:12", "appliance.headroom", "512 leaves 1280 bytes of a 2048-byte frame for the packet"},
	{"ring_size", "4:13", "appliance.ring_size", "1000 is not a power of two"},
	{"batch_size", "4:14", "appliance.batch_size", "0 is out of range 1..256"},
	{"idle_spin_range", "4:13", "appliance.idle_spin", "2ms is out of range 0s..1ms"},
	{"idle_spin_negative", "4:13", "appliance.idle_spin", "-1µs is out of range 0s..1ms"},
	{"idle_spin_unit", "4:13", "appliance.idle_spin", `"20" is not a duration`},
	{"local_ipv4_family", "4:14", "appliance.local_ipv4", "fd00::1 is not an IPv4 address"},
	{"flow_seed_hex", "4:13", "appliance.flow_seed", `"0xnothex" is not a 64-bit hex number`},
	{"flow_seed_zero", "4:13", "appliance.flow_seed", "must not be zero"},
	{"max_reals", "4:13", "appliance.max_reals", "2 (VIP, backend) pairs do not fit max_reals = 1"},
	{"flows_capacity", "6:12", "flows.capacity", "0 is out of range 1..134217728"},
	{"timeout_syntax", "6:15", "flows.tcp_timeout", `"15 minutes" is not a duration`},
	{"timeout_short", "6:15", "flows.udp_timeout", "100ms is out of range 1s..2160h"},
	{"burst_without_rate", "6:18", "flows.new_flow_burst", "100 with new_flows_per_second = 0 (unlimited)"},
	{"metrics_listen", "6:10", "metrics.listen", `"localhost" is not host:port`},
	{"log_level", "6:9", "log.level", `"verbose" is not one of "debug", "info", "warn" or "error"`},
	{"vip_address", "9:11", "vip[0].address", `"192.0.2.300" is not an IP address`},
	{"vip_missing_address", "7:3", "vip[0].address", "required: the VIP's IPv4 or IPv6 address"},
	{"vip_multicast", "9:11", "vip[0].address", "224.0.0.1 is a multicast address"},
	{"vip_name", "8:8", "vip[0].name", `"my web": a name is 1 to 63 letters`},
	{"port_and_all_ports", "11:13", "vip[0].all_ports", "cannot be true together with port = 80"},
	{"no_port", "7:3", "vip[0].port", "required: set port = 1..65535, or all_ports = true"},
	{"port_range", "10:8", "vip[0].port", "70000 is out of range 1..65535"},
	{"protocol", "10:12", "vip[0].protocol", `"sctp" is not one of "tcp" or "udp"`},
	{"mode", "11:8", "vip[0].mode", `"nat" is not one of "dsr", "ipip" or "gue"`},
	{"mode_with_mode_keys", "11:8", "vip[0].mode", `"nat" is not one of "dsr", "ipip" or "gue"`},
	{"table_size", "11:14", "vip[0].table_size", "65536 is not a usable Maglev table size: it must be a prime"},
	{"table_small", "11:14", "vip[0].table_size", "2 is smaller than the number of backends (3)"},
	{"mtu_range", "12:7", "vip[0].mtu", "100 is out of range 576..9216"},
	{"mtu_ipv6", "12:7", "vip[0].mtu", "1000 is below IPv6's minimum link MTU (1280)"},
	{"too_big_dsr", "11:1", "vip[0].too_big", "applies only to ipip and gue VIPs"},
	{"icmp_errors", "11:15", "vip[0].icmp_errors", `"ignore" is not one of "forward" or "drop"`},
	{"gue_port_ipip", "12:1", "vip[0].gue_port", "applies only to gue VIPs"},
	{"source_prefix_dsr", "11:1", "vip[0].source_prefix", "applies only to ipip and gue VIPs"},
	{"source_prefix_bits", "12:17", "vip[0].source_prefix", `"10.99.1.0/16" has bits set past its length: did you mean "10.99.0.0/16"?`},
	{"source_prefix_family", "12:17", "vip[0].source_prefix", "fd00:99::/64 is IPv6 but backend[0] (192.0.2.21) is IPv4"},
	{"weight", "14:10", "vip[0].backend[0].weight", "70000 is out of range 0..65535"},
	{"state", "14:9", "vip[0].backend[0].state", `"down" is not one of "active", "draining" or "failed"`},
	{"backend_address", "13:11", "vip[0].backend[0].address", `"web-1.example" is not an IP address`},
	{"backend_missing_address", "12:7", "vip[0].backend[0].address", "required: the backend's IPv4 or IPv6 address"},
	{"backend_is_vip", "13:11", "vip[0].backend[0].address", "192.0.2.10 is the VIP's own address"},
	{"duplicate_backend", "16:11", "vip[0].backend[1].address", "192.0.2.21 is already backend[0] of this VIP"},
	{"no_backends", "7:3", "vip[0].backend", "a VIP needs at least one [[vip.backend]]"},
	{"backends_empty", "11:11", "vip[0].backend", "a VIP needs at least one [[vip.backend]]"},
	{"dsr_family", "13:11", "vip[0].backend[0].address", "fd00:10::1 is IPv6 but the VIP is IPv4: dsr only reaches backends of the VIP's family"},
	{"encap_no_local_ipv4", "12:11", "vip[0].backend[0].address", "ipip to IPv4 backends needs an outer source address: set appliance.local_ipv4"},
	{"encap_no_local_ipv6", "13:11", "vip[0].backend[0].address", "gue to IPv6 backends needs an outer source address: set appliance.local_ipv6"},
	{"mac_bad", "14:7", "vip[0].backend[0].mac", `"02:00:00:00:0b" is not a 48-bit MAC address`},
	{"mac_multicast", "14:7", "vip[0].backend[0].mac", `"01:00:5e:00:00:01" is a multicast or broadcast MAC`},
	{"health_type", "13:8", "vip[0].health.type", `"icmp" is not one of "none", "tcp", "http" or "https"`},
	{"health_path_tcp", "14:1", "vip[0].health.path", `does not apply to a "tcp" health check`},
	{"health_timeout", "14:11", "vip[0].health.timeout", "3s is longer than interval (2s)"},
	{"health_none_fields", "14:1", "vip[0].health.interval", `does not apply to a "none" health check`},
	{"health_port_all_ports", "7:3", "vip[0].health.port", "required for a VIP with all_ports"},
	{"health_path", "14:8", "vip[0].health.path", `"healthz" must start with /`},
	{"duplicate_vip", "14:11", "vip[1].address", `vip tcp/192.0.2.10:80 is already defined by vip[0] ("web")`},
	{"duplicate_vip_name", "13:8", "vip[1].name", `"web" is already the name of vip[0]`},
}

func TestBadConfigs(t *testing.T) {
	if len(badConfigs) < 30 {
		t.Fatalf("only %d bad configs", len(badConfigs))
	}
	tested := make(map[string]bool)
	for _, tc := range badConfigs {
		t.Run(tc.file, func(t *testing.T) {
			tested[tc.file+".toml"] = true
			path := filepath.Join("testdata", "config", "bad", tc.file+".toml")
			cfg, err := parseConfig(path, mustRead(t, path), testCPUs)
			if err == nil {
				t.Fatalf("loaded: %+v", cfg)
			}
			probs := problemsOf(t, err)
			if len(probs) != 1 {
				t.Fatalf("%d problems, want 1:\n%v", len(probs), err)
			}
			want := path
			if tc.pos != "" {
				want += ":" + tc.pos
			}
			want += ": "
			if tc.key != "" {
				want += tc.key + ": "
			}
			got := probs[0].String()
			if !strings.HasPrefix(got, want) || !strings.Contains(got, tc.msg) {
				t.Errorf("got  %s\nwant %s...%s...", got, want, tc.msg)
			}
		})
	}
	// Every file in bad/ is in the table, except many.toml (TestManyProblems).
	files, _ := filepath.Glob(filepath.Join("testdata", "config", "bad", "*.toml"))
	for _, f := range files {
		if name := filepath.Base(f); !tested[name] && name != "many.toml" {
			t.Errorf("%s is not in badConfigs", f)
		}
	}
}

// A file with many problems reports all of them, in file order.
func TestManyProblems(t *testing.T) {
	path := filepath.Join("testdata", "config", "bad", "many.toml")
	_, err := parseConfig(path, mustRead(t, path), testCPUs)
	want := []string{
		`:5:8: appliance.cpus: lists 1 CPU(s) but queues = 2`,
		`:6:13: appliance.ring_size: 1000 is not a power of two`,
		`:7:1: appliance.colour: unknown key (known here: interface, queues, cpus,`,
		`:10:15: flows.tcp_timeout: "forever" is not a duration`,
		`:20:11: vip[0].health.timeout: 5s is longer than interval (2s)`,
		`:23:11: vip[0].backend[0].address: ipip to IPv4 backends needs an outer source address`,
		`:24:10: vip[0].backend[0].weight: -1 is out of range 0..65535`,
		`:27:11: vip[0].backend[1].address: 10.1.0.11 is already backend[0] of this VIP`,
		`:28:7: vip[0].backend[1].mac: "ff:ff:ff:ff:ff:ff" is a multicast or broadcast MAC`,
		`:30:3: vip[1].backend: a VIP needs at least one [[vip.backend]]`,
	}
	probs := problemsOf(t, err)
	if len(probs) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(probs), len(want), err)
	}
	for i := range min(len(probs), len(want)) {
		if !strings.HasPrefix(probs[i].String(), path+want[i]) {
			t.Errorf("problem %d:\ngot  %s\nwant %s%s...", i, probs[i], path, want[i])
		}
	}
	// Error() is the same list, one per line.
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(probs) || lines[0] != probs[0].String() {
		t.Errorf("Error() does not list the problems one per line:\n%s", err)
	}
}

func TestProblemString(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{File: "a.toml", Line: 3, Col: 7, Key: "vip[0].port", Msg: "bad"}, "a.toml:3:7: vip[0].port: bad"},
		{Problem{File: "a.toml", Key: "appliance.interface", Msg: "required"}, "a.toml: appliance.interface: required"},
		{Problem{File: "a.toml", Line: 1, Col: 1, Msg: "syntax"}, "a.toml:1:1: syntax"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

// A required key of a table that is not in the file at all has no position.
func TestProblemWithoutPosition(t *testing.T) {
	_, err := parseConfig("x.toml", []byte("[metrics]\nlisten = \"\"\n"), testCPUs)
	probs := problemsOf(t, err)
	if len(probs) != 1 || probs[0].String() != `x.toml: appliance.interface: required: the interface weir serves, like interface = "eth1"` {
		t.Fatalf("got %v", err)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want fs.ErrNotExist", err)
	}
}

// The minimal file gets every default, each spelt out here so that a
// changed default is a deliberate change of this test too.
func TestDefaults(t *testing.T) {
	path := filepath.Join("testdata", "config", "good", "minimal.toml")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path: path,
		Appliance: ApplianceConfig{
			Interface:      "eth1",
			XDPMode:        XDPAuto,
			ZeroCopy:       ZeroCopyAuto,
			FrameSize:      4096,
			FramesPerQueue: 4096,
			Headroom:       256,
			RingSize:       2048,
			BatchSize:      256,
			IdleSpin:       20 * time.Microsecond,
			FlowSeed:       hashing.DefaultFlowSeed,
			MaxReals:       65536,
		},
		Flows: flows.Config{
			Capacity:     1 << 20,
			TCPTimeout:   15 * time.Minute,
			UDPTimeout:   30 * time.Second,
			OtherTimeout: 30 * time.Second,
		},
		Metrics: MetricsConfig{Listen: "127.0.0.1:9181"},
		Log:     LogConfig{Format: LogText, Level: slog.LevelInfo},
		VIPs: []VIPConfig{{
			VIP: VIP{
				VIPKey:    VIPKey{Addr: netip.MustParseAddr("192.0.2.10"), Proto: packet.ProtoTCP, Port: 80},
				Name:      "web",
				Mode:      ModeDSR,
				TableSize: 65537,
				MTU:       1500,
				TooBig:    TooBigICMP,
				GUEPort:   5555,
				Backends: []Backend{{
					Addr:   netip.MustParseAddr("192.0.2.21"),
					Name:   "192.0.2.21",
					Weight: 1,
					State:  StateActive,
				}},
				Health: HealthConfig{
					Type:         HealthTCP,
					Path:         "/",
					ExpectStatus: 200,
					Interval:     2 * time.Second,
					Timeout:      time.Second,
					Rise:         2,
					Fall:         3,
				},
			},
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
	// DefaultConfig is what a file without the optional tables gives.
	def := DefaultConfig()
	if !reflect.DeepEqual(def.Flows, want.Flows) || def.Metrics != want.Metrics || def.Log != want.Log {
		t.Errorf("DefaultConfig %+v does not match the loaded defaults", def)
	}
	// A UDP VIP is not probed unless asked: a TCP connect says nothing
	// about a UDP service.
	udp := strings.Replace(string(mustRead(t, path)), "port = 80", "protocol = \"udp\"\nport = 53", 1)
	cfg, err = parseConfig("udp.toml", []byte(udp), testCPUs)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.VIPs[0].Health.Type; got != HealthNone {
		t.Errorf("UDP VIP health type %q, want none", got)
	}
	// The default probe timeout fits a short interval.
	short := string(mustRead(t, path)) + "[vip.health]\ninterval = \"300ms\"\n"
	cfg, err = parseConfig("short.toml", []byte(short), testCPUs)
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.VIPs[0].Health; h.Interval != 300*time.Millisecond || h.Timeout != 300*time.Millisecond {
		t.Errorf("interval %v timeout %v, want 300ms both", h.Interval, h.Timeout)
	}
}

func fullConfigWant(path string) *Config {
	return &Config{
		Path: path,
		Appliance: ApplianceConfig{
			Interface:      "ens1f0",
			Queues:         2,
			CPUs:           []int{3, 1},
			XDPMode:        XDPNative,
			ZeroCopy:       ZeroCopyRequire,
			FrameSize:      2048,
			FramesPerQueue: 8192,
			Headroom:       128,
			RingSize:       1024,
			BatchSize:      32,
			IdleSpin:       50 * time.Microsecond,
			LocalIPv4:      netip.MustParseAddr("10.0.0.1"),
			LocalIPv6:      netip.MustParseAddr("fd00::1"),
			FlowSeed:       0x5eed1234abcd0001,
			MaxReals:       1000,
		},
		Flows: flows.Config{
			Capacity:          65536,
			TCPTimeout:        time.Hour,
			UDPTimeout:        45 * time.Second,
			OtherTimeout:      10 * time.Second,
			NewFlowsPerSecond: 100000,
			NewFlowBurst:      200000,
		},
		Metrics: MetricsConfig{Listen: "[::1]:9200"},
		Log:     LogConfig{Format: LogJSON, Level: slog.LevelDebug},
		VIPs: []VIPConfig{
			{
				VIP: VIP{
					VIPKey:       VIPKey{Addr: netip.MustParseAddr("2001:db8::53"), Proto: packet.ProtoUDP},
					Name:         "dns6",
					Mode:         ModeGUE,
					TableSize:    655373,
					MTU:          9000,
					TooBig:       TooBigDrop,
					ICMPErrors:   ICMPDrop,
					GUEPort:      6080,
					SourcePrefix: netip.MustParsePrefix("fd00:99::/64"),
					Backends: []Backend{
						{Addr: netip.MustParseAddr("fd00:53::1"), Name: "dns-a", Weight: 7, State: StateDraining, MAC: packet.MAC{2, 0, 0, 0, 0, 0x0b}},
						{Addr: netip.MustParseAddr("fd00:53::2"), Name: "fd00:53::2", Weight: 1, State: StateFailed},
					},
					Health: HealthConfig{
						Type:         HealthHTTPS,
						Port:         8443,
						Path:         "/ready",
						ExpectStatus: 204,
						Interval:     10 * time.Second,
						Timeout:      500 * time.Millisecond,
						Rise:         5,
						Fall:         1,
					},
				},
			},
			{
				VIP: VIP{
					VIPKey:    VIPKey{Addr: netip.MustParseAddr("192.0.2.10"), Proto: packet.ProtoTCP, Port: 8080},
					Name:      "web",
					Mode:      ModeIPIP,
					TableSize: hashing.DefaultTableSize,
					MTU:       1400,
					TooBig:    TooBigICMP,
					GUEPort:   DefaultGUEPort,
					Backends: []Backend{
						{Addr: netip.MustParseAddr("10.1.0.11"), Name: "10.1.0.11", Weight: 0, State: StateActive, MAC: packet.MAC{2, 0, 0, 0, 0, 0x21}},
					},
					Health: HealthConfig{
						Type:         HealthNone,
						Path:         DefaultHealthPath,
						ExpectStatus: DefaultHealthStatus,
						Interval:     DefaultHealthInterval,
						Timeout:      DefaultHealthTimeout,
						Rise:         DefaultHealthRise,
						Fall:         DefaultHealthFall,
					},
				},
			},
		},
	}
}

// full.toml sets every key of the schema; each must arrive in the Config.
func TestFullConfig(t *testing.T) {
	path := filepath.Join("testdata", "config", "good", "full.toml")
	data := mustRead(t, path)
	cfg, err := parseConfig(path, data, testCPUs)
	if err != nil {
		t.Fatal(err)
	}
	if want := fullConfigWant(path); !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}

	// The file covers the whole schema: the keys the loader asks for are
	// exactly the keys in the file.
	asked := schemaKeys(data)
	inFile := make(map[string]bool)
	for p := range tomlpos.Scan(data) {
		if !strings.HasSuffix(p, "]") { // array elements are not keys
			inFile[tomlpos.Generic(p)] = true
		}
	}
	if !reflect.DeepEqual(asked, inFile) {
		t.Errorf("schema keys and full.toml keys differ:\nschema %v\nfile   %v", slices.Sorted(maps.Keys(asked)), slices.Sorted(maps.Keys(inFile)))
	}
}

// Every value in full.toml has an effect: without its line the file loads
// into something else (or fails). Nothing the schema lists is silently
// dropped on the way to the Config.
func TestEveryKeyHasAnEffect(t *testing.T) {
	path := filepath.Join("testdata", "config", "good", "full.toml")
	data := mustRead(t, path)
	full, err := parseConfig(path, data, testCPUs)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	n := 0
	for key, at := range tomlpos.Scan(data) {
		if at.Key == (tomlpos.Pos{}) || at.Val == (tomlpos.Pos{}) {
			continue // a table header or an array element
		}
		n++
		cut := slices.Concat(lines[:at.Key.Line-1], lines[at.Key.Line:])
		cfg, err := parseConfig(path, []byte(strings.Join(cut, "\n")), testCPUs)
		if err == nil && reflect.DeepEqual(cfg, full) {
			t.Errorf("%s (line %d) has no effect", key, at.Key.Line)
		}
	}
	if n < 50 {
		t.Errorf("only %d keys tried", n)
	}
}

// schemaKeys returns every key the loader asks for, without indexes.
func schemaKeys(data []byte) map[string]bool {
	l := &loader{file: "schema", cpus: testCPUs, schema: make(map[string]bool)}
	l.load(data)
	return l.schema
}

// The example at the repository root loads, builds a snapshot, and
// documents every key of the schema.
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "appliance.toml")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.VIPs) != 3 || cfg.Backends() != 6 {
		t.Errorf("%d VIPs, %d backends; want 3, 6", len(cfg.VIPs), cfg.Backends())
	}
	reg, err := NewRegistry(cfg.Appliance.MaxReals)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Model()
	m.LocalMAC = packet.MAC{2, 0, 0, 0, 0, 1}
	s, err := BuildSnapshot(m, reg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.vips) != 3 {
		t.Errorf("snapshot has %d VIPs", len(s.vips))
	}

	// Every schema key appears in the example, set or commented out, under
	// its table's header.
	documented := make(map[string]bool)
	header := regexp.MustCompile(`^\[{1,2}([a-z_.]+)\]{1,2}`)
	keyLine := regexp.MustCompile(`^(?:# )?([a-z0-9_]+) = `)
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(mustRead(t, path)))
	for sc.Scan() {
		if m := header.FindStringSubmatch(sc.Text()); m != nil {
			table = m[1]
			documented[table] = true
		} else if m := keyLine.FindStringSubmatch(sc.Text()); m != nil {
			documented[tomlpos.Join(table, m[1])] = true
		}
	}
	for k := range schemaKeys(mustRead(t, filepath.Join("testdata", "config", "good", "full.toml"))) {
		if !documented[k] {
			t.Errorf("appliance.toml does not document %s", k)
		}
	}
}

func TestModelIsACopy(t *testing.T) {
	path := filepath.Join("testdata", "config", "good", "full.toml")
	cfg, err := parseConfig(path, mustRead(t, path), testCPUs)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Model()
	if m.LocalAddr4 != cfg.Appliance.LocalIPv4 || m.LocalAddr6 != cfg.Appliance.LocalIPv6 || m.FlowSeed != 0x5eed1234abcd0001 {
		t.Errorf("model addresses or seed: %+v", m)
	}
	if len(m.VIPs) != 2 || m.VIPs[0].Backends[0].MAC != (packet.MAC{2, 0, 0, 0, 0, 0x0b}) || m.VIPs[0].Backends[1].MAC != (packet.MAC{}) {
		t.Fatalf("model VIPs: %+v", m.VIPs)
	}
	// The health check travels with the VIP, so Publish carries it.
	if h := m.VIPs[0].Health; h.Type != HealthHTTPS || h.Port != 8443 || h.Path != "/ready" || h.Rise != 5 || h.Fall != 1 {
		t.Errorf("model VIP health %+v, want the [vip.health] table of the file", h)
	}
	m.VIPs[0].Backends[0].Weight = 99
	if cfg.VIPs[0].Backends[0].Weight != 7 {
		t.Error("Model shares backends with the Config")
	}
	// The encapsulating VIPs with their source prefix and MACs build.
	reg, _ := NewRegistry(cfg.Appliance.MaxReals)
	if _, err := BuildSnapshot(m, reg, 1); err != nil {
		t.Fatal(err)
	}
}

// Inline tables and arrays of inline tables mean the same as headers, and
// problems inside them are placed just as well.
func TestInlineTables(t *testing.T) {
	headers, err := LoadConfig(filepath.Join("testdata", "config", "good", "minimal.toml"))
	if err != nil {
		t.Fatal(err)
	}
	inline := `appliance = { interface = "eth1" }
vip = [ { name = "web", address = "192.0.2.10", port = 80,
          backend = [ { address = "192.0.2.21" } ] } ]
`
	cfg, err := parseConfig(headers.Path, []byte(inline), availableCPUs())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, headers) {
		t.Errorf("inline form:\n%+v\nheader form:\n%+v", cfg, headers)
	}
	bad := strings.Replace(inline, `address = "192.0.2.21"`, `address = "192.0.2.21", weight = 1e3`, 1)
	_, err = parseConfig("x.toml", []byte(bad), testCPUs)
	probs := problemsOf(t, err)
	if len(probs) != 1 || probs[0].String() != "x.toml:3:58: vip[0].backend[0].weight: must be an integer, not a float" {
		t.Errorf("got %v", err)
	}
}

func TestFlowSeedForms(t *testing.T) {
	base := "[appliance]\ninterface = \"eth1\"\nflow_seed = "
	for _, tc := range []struct {
		val  string
		want uint64
		err  string
	}{
		{`"0xFFFFFFFFFFFFFFFF"`, 1<<64 - 1, ""},
		{`"0x1"`, 1, ""},
		{`12345`, 12345, ""},
		{`"0x10000000000000000"`, 0, "not a 64-bit hex number"},
		{`"12345"`, 0, "not a 64-bit hex number"},
		{`-5`, 0, "must be positive"},
		{`0`, 0, "must not be zero"},
		{`1.5`, 0, "must be a hex string"},
	} {
		cfg, err := parseConfig("s.toml", []byte(base+tc.val+"\n"), testCPUs)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.val, err)
		case tc.err == "" && cfg.Appliance.FlowSeed != tc.want:
			t.Errorf("%s: seed %#x, want %#x", tc.val, cfg.Appliance.FlowSeed, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), "s.toml:3:13: appliance.flow_seed: ") || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %v, want %q", tc.val, err, tc.err)
		}
	}
}

// The default batch size follows a ring too small for it; a batch size set
// larger than the ring is refused.
func TestBatchSizeFollowsSmallRing(t *testing.T) {
	base := "[appliance]\ninterface = \"eth1\"\nframes_per_queue = 256\nring_size = 128\n"
	cfg, err := parseConfig("b.toml", []byte(base), testCPUs)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Appliance.BatchSize; got != 128 {
		t.Errorf("batch size %d with ring_size 128 and no batch_size, want 128", got)
	}
	cfg, err = parseConfig("b.toml", []byte(base+"batch_size = 32\n"), testCPUs)
	if err != nil || cfg.Appliance.BatchSize != 32 {
		t.Errorf("batch_size 32: %v, %v", cfg, err)
	}
	_, err = parseConfig("b.toml", []byte(base+"batch_size = 256\n"), testCPUs)
	if err == nil || !strings.Contains(err.Error(), "b.toml:5:14: appliance.batch_size: 256 is larger than ring_size (128)") {
		t.Errorf("batch_size 256 with ring_size 128: %v", err)
	}
}

func TestListenForms(t *testing.T) {
	for _, ok := range []string{"", "127.0.0.1:9181", "[::1]:9181", ":9181", "metrics.example:9181", "[fe80::1%eth0]:9181"} {
		if ok != "" {
			if err := checkListen(ok); err != nil {
				t.Errorf("%q: %v", ok, err)
			}
		}
	}
	for _, bad := range []string{"9181", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:http", "bad host:80"} {
		if err := checkListen(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestMACForms(t *testing.T) {
	want := packet.MAC{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	for _, s := range []string{"02:aa:bb:cc:dd:ee", "02-AA-BB-CC-DD-EE", "02aa.bbcc.ddee"} {
		if m, err := parseUnicastMAC(s); err != nil || m != want {
			t.Errorf("%q: %v %v", s, m, err)
		}
	}
	for _, s := range []string{"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "02:00:5e:10:00:00:00:01", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "zz"} {
		if _, err := parseUnicastMAC(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestQueueCPUs(t *testing.T) {
	allowed := []int{2, 3, 5}
	for _, tc := range []struct {
		queues int
		cpus   []int
		rx     int
		want   []int
		err    string
	}{
		{0, nil, 4, []int{2, 3, 5, 2}, ""},
		{2, nil, 4, []int{2, 3}, ""},
		{0, []int{5, 3}, 2, []int{5, 3}, ""},
		{2, []int{5, 3}, 8, []int{5, 3}, ""},
		{4, nil, 2, nil, "queues = 4 but interface eth1 has 2 RX queues"},
		{0, []int{5, 3}, 4, nil, "cpus lists 2 CPUs but weir serves 4 queues"},
		{0, nil, 0, nil, "reports 0 RX queues"},
	} {
		a := ApplianceConfig{Interface: "eth1", Queues: tc.queues, CPUs: tc.cpus}
		got, err := queueCPUs(&a, tc.rx, allowed)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v rx %d: got %v, want %q", a, tc.rx, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%+v rx %d: got %v %v, want %v", a, tc.rx, got, err, tc.want)
		}
	}
	// On this machine, the default placement uses CPUs weir may run on.
	cfg := Config{Appliance: ApplianceConfig{Interface: "eth1"}}
	got, err := cfg.QueueCPUs(3)
	if err != nil || len(got) != 3 || !slices.Contains(availableCPUs(), got[2]) {
		t.Errorf("QueueCPUs(3) = %v, %v", got, err)
	}
}

func TestCPURanges(t *testing.T) {
	for _, tc := range []struct {
		in   []int
		want string
	}{{nil, "none"}, {[]int{0}, "0"}, {[]int{0, 1, 2, 3}, "0-3"}, {[]int{0, 2, 3, 4, 7}, "0,2-4,7"}} {
		if got := cpuRanges(tc.in); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Loading never panics, whatever the document holds. (That the scan finds
// every key the decoder finds is internal/tomlpos's FuzzScan.)
func FuzzParseConfig(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "config", "*", "*.toml"))
	seeds = append(seeds, filepath.Join("..", "appliance.toml"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, doc string) {
		_, _ = parseConfig("fuzz.toml", []byte(doc), testCPUs)
	})
}
