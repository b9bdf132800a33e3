package appliance

import (
	"strings"
	"testing"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
	"github.com/weirlb/weir/ring"
)

// TestStartFailuresCleanUp makes Start fail early (no such interface) and
// late (after the firmware is loaded and a UMEM mapped: zero-copy required
// on a veth), and checks it returns an error that says what to change,
// without panicking, and leaves the interface free for the next Start.
func TestStartFailuresCleanUp(t *testing.T) {
	testutil.RequirePrivileged(t)
	d, err := lab.NewDSR(lab.DSRConfig{Backends: 1, Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	m, _ := dsrModel(d, []uint32{1})
	nic := d.Appliance.NIC.Name
	for _, c := range []struct {
		name string
		opts Options
		want string
	}{
		{"no such interface", Options{Interface: "nosuchif0"}, "nosuchif0"},
		{"more queues than the interface has", Options{Interface: nic, Queues: 4}, "RX queues"},
		{"zero-copy required on veth", Options{Interface: nic, ZeroCopy: ring.ZeroCopyRequire}, "zero-copy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Logger = testLogger(t)
			err := d.Appliance.NS.Do(func() error {
				a, err := Start(c.opts, m)
				if a != nil {
					t.Errorf("Start returned an appliance with error %v", err)
				}
				return err
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, c.want)
			}
		})
	}
	// Nothing was left bound or attached: a normal start works at once.
	var app *Appliance
	if err := d.Appliance.NS.Do(func() error {
		var err error
		app, err = Start(Options{Interface: nic, Logger: testLogger(t)}, m)
		return err
	}); err != nil {
		t.Fatalf("start after failed starts: %v", err)
	}
	if _, err := app.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestPublishRefusesSeedChange(t *testing.T) {
	l := newDSRLab(t, []uint32{1, 1, 1})
	m, _ := dsrModel(l.DSR, []uint32{1, 1, 1})
	gen := l.app.Snapshot().Generation
	m.FlowSeed = 12345
	if err := l.app.Publish(m); err == nil || !strings.Contains(err.Error(), "seed") {
		t.Fatalf("Publish with a new seed: %v", err)
	}
	if l.app.Snapshot().Generation != gen {
		t.Fatal("a refused Publish changed the snapshot")
	}
}
