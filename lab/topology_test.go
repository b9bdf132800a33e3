package lab

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestHostAddr(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		host   int
		want   string
	}{
		{"10.90.0.0/24", 1, "10.90.0.1"},
		{"10.90.0.0/24", 254, "10.90.0.254"},
		{"10.90.0.7/24", 11, "10.90.0.11"}, // the host bits of the prefix are ignored
		{"10.92.3.0/24", 2, "10.92.3.2"},
		{"fd00:90::/64", 11, "fd00:90::11"}, // decimal digits, read as hex
		{"fd00:90::/64", 254, "fd00:90::254"},
		{"fd00:92:17::/64", 2, "fd00:92:17::2"},
	} {
		if got := hostAddr(netip.MustParsePrefix(tc.prefix), tc.host); got != mustAddr(tc.want) {
			t.Errorf("hostAddr(%s, %d) = %v, want %s", tc.prefix, tc.host, got, tc.want)
		}
	}
}

func TestMACFor(t *testing.T) {
	m := macFor(mustAddr("10.90.0.11"))
	if m.String() != "02:00:0a:5a:00:0b" {
		t.Errorf("macFor(10.90.0.11) = %s", m)
	}
	if m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("%s is not a locally administered unicast MAC", m)
	}
	if hw := m.HardwareAddr(); hw.String() != m.String() {
		t.Errorf("HardwareAddr() = %s", hw)
	}
}

func TestUndoStack(t *testing.T) {
	var u undoStack
	var order []int
	for i := range 3 {
		u.push("step", func() error { order = append(order, i); return nil })
	}
	if err := u.run(); err != nil {
		t.Fatal(err)
	}
	if len(order) != 3 || order[0] != 2 || order[2] != 0 {
		t.Errorf("undo order %v, want newest first", order)
	}
	if err := u.run(); err != nil || len(order) != 3 {
		t.Errorf("second run: %v, order %v", err, order)
	}
}

func TestUndoStackKeepsGoing(t *testing.T) {
	var u undoStack
	ran := 0
	u.push("first", func() error { ran++; return nil })
	u.push("broken", func() error { ran++; return errBoom })
	u.push("last", func() error { ran++; return nil })
	err := u.run()
	if ran != 3 {
		t.Errorf("%d of 3 steps ran", ran)
	}
	if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "undo broken") {
		t.Errorf("run = %v, want the broken step named", err)
	}
}

var errBoom = errors.New("boom")
