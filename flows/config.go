package flows

import (
	"errors"
	"fmt"
	"time"
)

// Limits on Config values.
const (
	// MaxCapacity bounds Capacity (about 6.6 GB of table at ~49 bytes per entry).
	MaxCapacity = 1 << 27
	// MinTimeout is the shortest idle timeout. Deadlines have a resolution
	// of Tick (~16.8 ms); anything much shorter than a second would be mostly
	// rounding, and no real flow is idle-timed-out that fast.
	MinTimeout = time.Second
	// MaxTimeout is the longest idle timeout. Deadlines are compared modulo
	// 2^32 ticks, so a timeout must stay far below 2^31 ticks (~1.1 years);
	// 90 days leaves Sweep the rest of that window to reclaim expired entries.
	MaxTimeout = 90 * 24 * time.Hour
)

// Defaults used by DefaultConfig.
const (
	DefaultCapacity     = 1 << 20
	DefaultTCPTimeout   = 15 * time.Minute
	DefaultUDPTimeout   = 30 * time.Second
	DefaultOtherTimeout = 30 * time.Second
)

// ErrInvalidConfig is wrapped by every error New returns.
var ErrInvalidConfig = errors.New("invalid flow table config")

// Config sizes a Table and sets its timeouts and new-flow rate limit.
type Config struct {
	// Capacity is the number of entries. It is rounded up to a multiple of
	// SlotsPerBucket; Table.Capacity reports the rounded value.
	Capacity int

	// Idle timeouts by the protocol of the flow key: an entry not looked up
	// or inserted for this long is gone. OtherTimeout applies to every
	// protocol but TCP and UDP (ICMP, ICMPv6, GRE, ...). Fragments carry the
	// protocol of their datagram in the key, so they use its timeout.
	TCPTimeout, UDPTimeout, OtherTimeout time.Duration

	// NewFlowsPerSecond limits how many new entries the table stores per
	// second (a token bucket holding at most NewFlowBurst tokens, refilled
	// lazily from the now passed to Insert). Inserts over the limit are not
	// stored and return RateLimited; updates of existing entries are never
	// limited. Under a SYN flood this keeps the table holding the live flows
	// instead of churning through spoofed ones. 0 means unlimited, and then
	// NewFlowBurst must be 0 too.
	NewFlowsPerSecond uint32
	NewFlowBurst      uint32
}

// DefaultConfig returns 1<<20 entries, TCP 15 min, UDP 30 s, others 30 s,
// and no new-flow rate limit: the right limit depends on how many workers
// share the box's new-flow budget, so the appliance config sets it.
func DefaultConfig() Config {
	return Config{
		Capacity:     DefaultCapacity,
		TCPTimeout:   DefaultTCPTimeout,
		UDPTimeout:   DefaultUDPTimeout,
		OtherTimeout: DefaultOtherTimeout,
	}
}

// validate reports the first thing wrong with c and what to change.
func (c Config) validate() error {
	if c.Capacity < 1 || c.Capacity > MaxCapacity {
		return fmt.Errorf("%w: Capacity %d: set it between 1 and %d", ErrInvalidConfig, c.Capacity, MaxCapacity)
	}
	for _, to := range []struct {
		name string
		d    time.Duration
	}{{"TCPTimeout", c.TCPTimeout}, {"UDPTimeout", c.UDPTimeout}, {"OtherTimeout", c.OtherTimeout}} {
		if to.d < MinTimeout || to.d > MaxTimeout {
			return fmt.Errorf("%w: %s %v: set it between %v and %v", ErrInvalidConfig, to.name, to.d, MinTimeout, MaxTimeout)
		}
	}
	if c.NewFlowsPerSecond > 0 && c.NewFlowBurst == 0 {
		return fmt.Errorf("%w: NewFlowBurst 0 with NewFlowsPerSecond %d: set a burst of at least 1 (one second's worth, %d, is a good start)",
			ErrInvalidConfig, c.NewFlowsPerSecond, c.NewFlowsPerSecond)
	}
	if c.NewFlowsPerSecond == 0 && c.NewFlowBurst != 0 {
		return fmt.Errorf("%w: NewFlowBurst %d with NewFlowsPerSecond 0 (unlimited): set a rate or set the burst to 0",
			ErrInvalidConfig, c.NewFlowBurst)
	}
	return nil
}
