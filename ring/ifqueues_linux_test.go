package ring

import (
	"strings"
	"testing"
)

func TestRXQueuesOfMultiQueueVeth(t *testing.T) {
	for _, queues := range []int{1, 2, 4} {
		l := newLab(t, queues)
		l.do(func() error {
			n, err := RXQueues(l.xdpName)
			if err != nil {
				t.Fatalf("RXQueues(%s): %v", l.xdpName, err)
			}
			if n != queues {
				t.Errorf("RXQueues(%s) = %d, want %d", l.xdpName, n, queues)
			}
			return nil
		})
	}
}

func TestRXQueuesErrors(t *testing.T) {
	l := newLab(t, 1)
	l.do(func() error {
		if _, err := RXQueues("nosuchif0"); err == nil || !strings.Contains(err.Error(), "nosuchif0") {
			t.Errorf("missing interface: err = %v, want an error naming it", err)
		}
		if _, err := RXQueues(strings.Repeat("x", 20)); err == nil || !strings.Contains(err.Error(), "too long") {
			t.Errorf("long name: err = %v", err)
		}
		return nil
	})
}
