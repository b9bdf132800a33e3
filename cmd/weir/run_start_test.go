package main

import (
	"strings"
	"testing"

	"github.com/weirlb/weir/appliance"
)

// TestRunStartFailuresSayWhatToChange starts weir run's core in a lab's
// appliance namespace with configurations the interface cannot serve: each
// start must fail before touching the interface, saying what to change.
func TestRunStartFailuresSayWhatToChange(t *testing.T) {
	d := newRunLab(t, 1)
	base := string(runConfig(t, d, []uint32{1}))
	nic := d.Appliance.NIC.Name
	start := func(text string) error {
		t.Helper()
		cfg, err := appliance.ParseConfig("appliance.toml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		log := &logBuffer{}
		dm, err := startDaemon(cfg, daemonOptions{path: "appliance.toml", stderr: log, enter: d.Appliance.NS.Do})
		if err == nil {
			dm.stop()
			t.Fatalf("started with:\n%s", text)
		}
		if xdpProgram(t, d) != 0 {
			t.Errorf("a failed start left an XDP program attached")
		}
		return err
	}
	cases := []struct {
		name, from, to string
		want           []string
	}{
		{"no such interface", `interface = "` + nic + `"`, `interface = "ens9"`,
			[]string{"interface ens9 not found in this network namespace", "set [appliance] interface in appliance.toml to one of " + nic}},
		{"more queues than the interface", "queues = 0", "queues = 4",
			[]string{"queues = 4 but interface " + nic + " has 2 RX queues", "ethtool -L " + nic + " combined 4"}},
		{"cpus for another queue count", "queues = 0", "queues = 0\ncpus = [0]",
			[]string{"cpus lists 1 CPUs but weir serves 2 queues"}},
	}
	for _, c := range cases {
		if !strings.Contains(base, c.from) {
			t.Fatalf("%s: the lab config has no %q", c.name, c.from)
		}
		err := start(strings.Replace(base, c.from, c.to, 1))
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
		t.Logf("%s: %v", c.name, err)
	}

	// An interface that is down.
	h := d.Appliance.NS.Netlink()
	l, err := h.LinkByName(nic)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	defer h.LinkSetUp(l)
	err = start(base)
	if want := "interface " + nic + " is down: bring it up (ip link set dev " + nic + " up)"; !strings.Contains(err.Error(), want) {
		t.Errorf("down interface: %q does not say %q", err, want)
	}
	t.Logf("interface down: %v", err)
}
