package appliance

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/hashing"
	"github.com/weirlb/weir/packet"
)

// DefaultConfigPath is where weir reads its configuration unless told
// otherwise.
const DefaultConfigPath = "/etc/weir/appliance.toml"

// Defaults for keys a configuration file leaves out. VIP defaults not listed
// here are DefaultMTU, DefaultGUEPort and hashing.DefaultTableSize; the flow
// table's are flows.DefaultConfig's.
const (
	DefaultFrameSize      = 4096
	DefaultFramesPerQueue = 4096
	DefaultHeadroom       = 256
	DefaultRingSize       = 2048
	DefaultBatchSize      = 256
	DefaultIdleSpin       = 20 * time.Microsecond
	DefaultMaxReals       = 65536
	DefaultMetricsListen  = "127.0.0.1:9181"
	DefaultWeight         = 1
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = time.Second
	DefaultHealthRise     = 2
	DefaultHealthFall     = 3
	DefaultHealthPath     = "/"
	DefaultHealthStatus   = 200
)

// Limits on configuration values; the messages name them.
const (
	cfgMaxQueues         = 1024
	cfgMinFramesPerQueue = 128
	cfgMaxFramesPerQueue = 1 << 20
	// cfgMinHeadroom fits the largest outer header weir prepends: IPv6 + UDP
	// (GUE to an IPv6 backend).
	cfgMinHeadroom     = 48
	cfgMinRingSize     = 64
	cfgMaxRingSize     = 16384
	cfgMaxBatchSize    = 256
	cfgMinMTU          = 576
	cfgMaxMTU          = 9216
	cfgMinIPv6MTU      = 1280
	cfgMaxWeight       = 65535
	cfgMinHealthPeriod = 100 * time.Millisecond
	cfgMaxHealthPeriod = time.Hour
	cfgMinHealthWait   = 10 * time.Millisecond
	cfgMaxRiseFall     = 100
	cfgMaxNameLen      = 63
)

// XDPMode says how the redirect program is attached to the interface.
type XDPMode string

// XDP attach modes.
const (
	XDPAuto    XDPMode = "auto"    // native if the driver supports it, else generic
	XDPNative  XDPMode = "native"  // driver mode only; fail if unsupported
	XDPGeneric XDPMode = "generic" // skb mode: works everywhere, slower, never zero-copy
)

// ZeroCopy says whether AF_XDP sockets must, may or must not bind in
// zero-copy mode.
type ZeroCopy string

// Zero-copy policies.
const (
	ZeroCopyAuto    ZeroCopy = "auto"    // zero-copy if the driver offers it, else copy mode
	ZeroCopyRequire ZeroCopy = "require" // fail to start rather than run in copy mode
	ZeroCopyNever   ZeroCopy = "never"   // always copy mode
)

// LogFormat is the format of weir's log lines.
type LogFormat string

// Log formats.
const (
	LogText LogFormat = "text" // slog.TextHandler: key=value pairs
	LogJSON LogFormat = "json" // slog.JSONHandler: one JSON object per line
)

// Config is a loaded, validated configuration file with every default
// applied. Load one with LoadConfig; a Config is a plain value that nothing
// in weir modifies after loading, so a reload builds a new one.
type Config struct {
	Path      string // the file it was read from
	Appliance ApplianceConfig
	Flows     flows.Config // per-worker flow table: [flows]
	Metrics   MetricsConfig
	Log       LogConfig
	VIPs      []VIPConfig
}

// ApplianceConfig is the [appliance] table: the interface, its queues and
// the AF_XDP geometry.
type ApplianceConfig struct {
	Interface string
	// Queues is how many RX queues (0 to Queues-1) get a socket and a
	// worker; 0 means every RX queue the interface has, found at start.
	Queues int
	// CPUs[i] is the CPU queue i's worker is pinned to; empty means queue
	// i runs on the i-th CPU weir may use, modulo their number.
	CPUs           []int
	XDPMode        XDPMode
	ZeroCopy       ZeroCopy
	FrameSize      uint32        // UMEM frame size: 2048 or 4096
	FramesPerQueue uint32        // UMEM frames per queue, a power of two
	Headroom       uint32        // bytes reserved in front of each packet for outer headers
	RingSize       uint32        // entries of each of the four rings of a socket
	BatchSize      int           // descriptors a worker handles per batch
	IdleSpin       time.Duration // how long an idle worker polls on before it sleeps in poll(2)
	LocalIPv4      netip.Addr
	LocalIPv6      netip.Addr
	FlowSeed       uint64 // never 0: hashing.DefaultFlowSeed unless configured
	MaxReals       int    // capacity of the real registry
}

// MetricsConfig is the [metrics] table.
type MetricsConfig struct {
	Listen string // host:port of the Prometheus endpoint; empty disables it
}

// LogConfig is the [log] table.
type LogConfig struct {
	Format LogFormat
	Level  slog.Level
}

// VIPConfig is one [[vip]] table: the VIP as the model describes it, with
// its static backends and its [vip.health] table (VIP.Health), so that the
// health check travels with the VIP through Config.Model and Publish.
type VIPConfig struct {
	VIP
}

// DefaultConfig returns the configuration an empty file would give, but for
// the interface, which has no default.
func DefaultConfig() Config {
	return Config{
		Appliance: ApplianceConfig{
			XDPMode:        XDPAuto,
			ZeroCopy:       ZeroCopyAuto,
			FrameSize:      DefaultFrameSize,
			FramesPerQueue: DefaultFramesPerQueue,
			Headroom:       DefaultHeadroom,
			RingSize:       DefaultRingSize,
			BatchSize:      DefaultBatchSize,
			IdleSpin:       DefaultIdleSpin,
			FlowSeed:       hashing.DefaultFlowSeed,
			MaxReals:       DefaultMaxReals,
		},
		Flows:   flows.DefaultConfig(),
		Metrics: MetricsConfig{Listen: DefaultMetricsListen},
		Log:     LogConfig{Format: LogText, Level: slog.LevelInfo},
	}
}

// defaultVIP holds the defaults of a [[vip]] table. The health check
// defaults to a TCP connect for TCP VIPs and to none for UDP ones (a TCP
// probe says nothing about a UDP service); see vip.
func defaultVIP() VIPConfig {
	return VIPConfig{
		VIP: VIP{
			VIPKey:    VIPKey{Proto: packet.ProtoTCP},
			Mode:      ModeDSR,
			TableSize: hashing.DefaultTableSize,
			MTU:       DefaultMTU,
			TooBig:    TooBigICMP,
			GUEPort:   DefaultGUEPort,
			Health: HealthConfig{
				Path:         DefaultHealthPath,
				ExpectStatus: DefaultHealthStatus,
				Interval:     DefaultHealthInterval,
				Timeout:      DefaultHealthTimeout,
				Rise:         DefaultHealthRise,
				Fall:         DefaultHealthFall,
			},
		},
	}
}

// Model returns the VIPs and backends of c as the control plane starts from
// them: static MACs where configured, zero MACs (to be resolved) elsewhere,
// and no local MAC (the interface's, known at start). The result shares
// nothing with c.
func (c *Config) Model() Model {
	m := Model{
		LocalAddr4: c.Appliance.LocalIPv4,
		LocalAddr6: c.Appliance.LocalIPv6,
		FlowSeed:   c.Appliance.FlowSeed,
		VIPs:       make([]VIP, len(c.VIPs)),
	}
	for i := range c.VIPs {
		m.VIPs[i] = c.VIPs[i].VIP
		m.VIPs[i].Backends = slices.Clone(c.VIPs[i].Backends)
	}
	return m
}

// Backends returns the number of (VIP, backend) pairs.
func (c *Config) Backends() int {
	n := 0
	for i := range c.VIPs {
		n += len(c.VIPs[i].Backends)
	}
	return n
}

// QueueCPUs returns, for an interface with rxQueues RX queues, the CPU of
// each queue weir serves (the result's length is the number of workers). It
// fails if the configuration asks for more queues than the interface has,
// or lists CPUs for another number of queues. This is the start-up half of
// the queue checks: the file alone cannot know the interface.
func (c *Config) QueueCPUs(rxQueues int) ([]int, error) {
	return queueCPUs(&c.Appliance, rxQueues, availableCPUs())
}

func queueCPUs(a *ApplianceConfig, rxQueues int, allowed []int) ([]int, error) {
	if rxQueues < 1 {
		return nil, fmt.Errorf("interface %s reports %d RX queues", a.Interface, rxQueues)
	}
	n := a.Queues
	switch {
	case n > rxQueues:
		return nil, fmt.Errorf("queues = %d but interface %s has %d RX queues: lower queues or raise the channel count (ethtool -L %s combined %d)",
			n, a.Interface, rxQueues, a.Interface, n)
	case n == 0:
		n = rxQueues
	}
	if len(a.CPUs) > 0 {
		if len(a.CPUs) != n {
			return nil, fmt.Errorf("cpus lists %d CPUs but weir serves %d queues of %s: list one CPU per queue or leave cpus empty",
				len(a.CPUs), n, a.Interface)
		}
		return slices.Clone(a.CPUs), nil
	}
	if len(allowed) == 0 {
		return nil, errors.New("no CPU is available to pin workers to")
	}
	cpus := make([]int, n)
	for i := range cpus {
		cpus[i] = allowed[i%len(allowed)]
	}
	return cpus, nil
}

// availableCPUs lists the CPUs this process may run on (its affinity mask,
// which a cpuset or taskset may have narrowed), or all of them if the mask
// cannot be read.
func availableCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil && set.Count() > 0 {
		var cpus []int
		for i := 0; i < len(set)*64; i++ {
			if set.IsSet(i) {
				cpus = append(cpus, i)
			}
		}
		return cpus
	}
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus
}

// Problem is one thing wrong with a configuration file. Line and Col (1-based,
// Col in bytes) are 0 when the problem has no single place in the file, such
// as a required key that is missing.
type Problem struct {
	File      string
	Line, Col int
	Key       string // path of the key, like vip[0].backend[1].weight; may be empty
	Msg       string
}

// String formats p as file:line:col: key: message, leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", p.Line, p.Col)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// ConfigError lists every problem found in a configuration file, in the
// order of the file (problems without a position first).
type ConfigError struct {
	Problems []Problem
}

// Error returns the problems one per line.
func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// LoadConfig reads, decodes and validates the configuration file at path.
// A file that is not valid returns a *ConfigError listing every problem.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes and validates data, naming path in problems. An
// invalid configuration returns a *ConfigError listing every problem.
func ParseConfig(path string, data []byte) (*Config, error) {
	return parseConfig(path, data, availableCPUs())
}

func parseConfig(path string, data []byte, cpus []int) (*Config, error) {
	l := &loader{file: cmp.Or(path, "<config>"), cpus: cpus, schema: make(map[string]bool)}
	c := l.load(data)
	c.Path = path
	if len(l.probs) > 0 {
		slices.SortStableFunc(l.probs, func(a, b Problem) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
		})
		return nil, &ConfigError{Problems: l.probs}
	}
	return c, nil
}
