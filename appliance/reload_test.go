package appliance

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const reloadBase = `
[appliance]
interface = "eth1"

[[vip]]
name = "web"
address = "192.0.2.1"
port = 80
  [vip.health]
  type = "none"
  [[vip.backend]]
  address = "10.0.0.11"
  weight = 1
  [[vip.backend]]
  address = "10.0.0.12"
  weight = 1
`

func parseReloadConfig(t *testing.T, text string) *Config {
	t.Helper()
	c, err := parseConfig("reload.toml", []byte(text), []int{0, 1, 2, 3})
	if err != nil {
		t.Fatalf("config:\n%s\n%v", text, err)
	}
	return c
}

// withTable puts lines at the top of the table named header (adding the
// table if the base has none).
func withTable(base, header, lines string) string {
	if i := strings.Index(base, header+"\n"); i >= 0 {
		i += len(header) + 1
		return base[:i] + lines + "\n" + base[i:]
	}
	return header + "\n" + lines + "\n" + base
}

func TestRestartKeys(t *testing.T) {
	tests := []struct {
		header, lines string
		want          []string // nil: applies live
	}{
		{"[appliance]", `queues = 1`, []string{"appliance.queues"}},
		{"[appliance]", `cpus = [1, 2]`, []string{"appliance.cpus"}},
		{"[appliance]", `xdp_mode = "generic"`, []string{"appliance.xdp_mode"}},
		{"[appliance]", `zero_copy = "never"`, []string{"appliance.zero_copy"}},
		{"[appliance]", `frame_size = 2048`, []string{"appliance.frame_size"}},
		{"[appliance]", `frames_per_queue = 8192`, []string{"appliance.frames_per_queue"}},
		{"[appliance]", `headroom = 128`, []string{"appliance.headroom"}},
		{"[appliance]", `ring_size = 1024`, []string{"appliance.ring_size"}},
		{"[appliance]", `batch_size = 32`, []string{"appliance.batch_size"}},
		{"[appliance]", `idle_spin = "0s"`, []string{"appliance.idle_spin"}},
		{"[appliance]", `flow_seed = "0x1234"`, []string{"appliance.flow_seed"}},
		{"[appliance]", `max_reals = 100`, []string{"appliance.max_reals"}},
		{"[appliance]", "queues = 1\nring_size = 1024", []string{"appliance.queues", "appliance.ring_size"}},
		{"[flows]", `capacity = 1000`, []string{"flows.capacity"}},
		{"[flows]", `tcp_timeout = "1h"`, []string{"flows.tcp_timeout"}},
		{"[flows]", `udp_timeout = "1m"`, []string{"flows.udp_timeout"}},
		{"[flows]", `other_timeout = "1m"`, []string{"flows.other_timeout"}},
		{"[flows]", "new_flows_per_second = 10\nnew_flow_burst = 10", []string{"flows.new_flows_per_second", "flows.new_flow_burst"}},
		{"[metrics]", `listen = "127.0.0.1:9999"`, []string{"metrics.listen"}},
		{"[log]", `format = "json"`, []string{"log.format"}},
		// Live.
		{"[log]", `level = "debug"`, nil},
		{"[appliance]", `local_ipv4 = "10.0.0.1"`, nil},
		{"[appliance]", `local_ipv6 = "fd00::1"`, nil},
		{"[[vip]]", `table_size = 251`, nil},
	}
	base := parseReloadConfig(t, reloadBase)
	for _, tt := range tests {
		next := parseReloadConfig(t, withTable(reloadBase, tt.header, tt.lines))
		if got := RestartKeys(base, next); !slices.Equal(got, tt.want) {
			t.Errorf("%s %s: restart keys %q, want %q", tt.header, tt.lines, got, tt.want)
		}
	}
	if got := RestartKeys(base, base); got != nil {
		t.Errorf("same config: restart keys %q", got)
	}
}

// TestRestartKeysCoverEveryField changes each field of the non-VIP tables
// in turn: each must either be a restart key or be known to apply live, so a
// field added to the configuration cannot slip through a reload unnoticed.
func TestRestartKeysCoverEveryField(t *testing.T) {
	live := map[string]bool{"Appliance.LocalIPv4": true, "Appliance.LocalIPv6": true, "Log.Level": true}
	base := parseReloadConfig(t, reloadBase)
	for _, table := range []string{"Appliance", "Flows", "Metrics", "Log"} {
		tv := reflect.ValueOf(base).Elem().FieldByName(table)
		for i := range tv.NumField() {
			name := table + "." + tv.Type().Field(i).Name
			next := *base
			nv := reflect.ValueOf(&next).Elem().FieldByName(table).Field(i)
			if !perturb(nv) {
				t.Fatalf("%s: cannot change a %s: teach perturb", name, nv.Type())
			}
			keys := RestartKeys(base, &next)
			switch {
			case live[name] && len(keys) > 0:
				t.Errorf("%s applies live but gives restart keys %q", name, keys)
			case !live[name] && len(keys) != 1:
				t.Errorf("%s: restart keys %q, want exactly one (or list it as live)", name, keys)
			}
		}
	}
	// Everything of a [[vip]] table is in the model, which Publish carries.
	if n := reflect.TypeFor[VIPConfig]().NumField(); n != 1 {
		t.Errorf("VIPConfig has %d fields: a field outside the model needs a restart key or a way to apply it live", n)
	}
}

// perturb changes v (settable) to another value of its type.
func perturb(v reflect.Value) bool {
	switch v.Interface().(type) {
	case netip.Addr:
		v.Set(reflect.ValueOf(netip.MustParseAddr("10.9.9.9")))
		return true
	case time.Duration:
		v.SetInt(v.Int() + int64(time.Second))
		return true
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
	default:
		return false
	}
	return true
}

// fakeApp records what a Reloader publishes.
type fakeApp struct {
	gen       uint64
	published []Model
	err       error
}

func (f *fakeApp) Publish(m Model) error {
	if f.err != nil {
		return f.err
	}
	f.gen++
	f.published = append(f.published, m)
	return nil
}

func (f *fakeApp) Snapshot() *Snapshot { return &Snapshot{Generation: f.gen} }

func TestReloader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "appliance.toml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(reloadBase)
	running, err := parseConfig(path, []byte(reloadBase), []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	app := &fakeApp{gen: 1}
	r := newReloader(app, running, testLogger(t))

	// A weight change and a new backend: applied.
	write(strings.Replace(reloadBase, "address = \"10.0.0.12\"\n  weight = 1", "address = \"10.0.0.12\"\n  weight = 3\n  [[vip.backend]]\n  address = \"10.0.0.13\"", 1))
	res := r.Reload()
	if res.Outcome != ReloadApplied || res.Generation != 2 || len(app.published) != 1 || res.Seq != 1 {
		t.Fatalf("applied reload: %+v, published %d", res, len(app.published))
	}
	if want := (ModelChanges{BackendsAdded: 1, BackendsChanged: 1}); res.Changes != want {
		t.Errorf("changes %+v, want %+v", res.Changes, want)
	}
	if got := app.published[0].VIPs[0].Backends; len(got) != 3 || got[1].Weight != 3 {
		t.Errorf("published backends %+v", got)
	}
	applied := r.Config()
	if applied == running || res.Config != applied {
		t.Errorf("the applied configuration is not the one in force")
	}

	// The same file again: nothing to publish.
	if res := r.Reload(); res.Outcome != ReloadUnchanged || len(app.published) != 1 || res.Generation != 2 {
		t.Errorf("unchanged reload: %+v", res)
	}

	// An invalid file: every problem reported, nothing published, the
	// running configuration kept.
	write(reloadBase + "\n[[vip]]\nname = \"x\"\naddress = \"192.0.2.999\"\nport = 70000\nbogus = 1\n")
	res = r.Reload()
	if res.Outcome != ReloadInvalid || len(res.Problems) < 3 || len(app.published) != 1 || res.Generation != 2 {
		t.Errorf("invalid reload: %+v", res)
	}
	for _, p := range res.Problems {
		if p.File != path {
			t.Errorf("problem without the file: %v", p)
		}
	}
	if r.Config() == nil || r.Config().Path != path || len(r.Config().VIPs[0].Backends) != 3 {
		t.Errorf("the running configuration changed after an invalid reload")
	}

	// A start-up setting: refused as a whole, even with live changes.
	write(withTable(strings.Replace(reloadBase, "weight = 1", "weight = 5", 1), "[appliance]", "queues = 4"))
	res = r.Reload()
	if res.Outcome != ReloadRestartRequired || !slices.Equal(res.RestartKeys, []string{"appliance.queues"}) || len(app.published) != 1 {
		t.Errorf("restart reload: %+v", res)
	}

	// The appliance refuses the model.
	write(reloadBase)
	app.err = errors.New("registry full")
	before := r.Config()
	res = r.Reload()
	if res.Outcome != ReloadFailed || !errors.Is(res.Err, app.err) || r.Config() != before || len(before.VIPs[0].Backends) != 3 {
		t.Errorf("failed reload: %+v", res)
	}
	app.err = nil

	// An unreadable file.
	os.Remove(path)
	if res := r.Reload(); res.Outcome != ReloadInvalid || res.Err == nil || len(res.Problems) != 0 {
		t.Errorf("missing file: %+v", res)
	}

	c := r.Counts()
	want := map[ReloadOutcome]uint64{ReloadApplied: 1, ReloadUnchanged: 1, ReloadInvalid: 2, ReloadRestartRequired: 1, ReloadFailed: 1}
	for _, o := range ReloadOutcomes() {
		if c.Of(o) != want[o] {
			t.Errorf("count of %s: %d, want %d", o, c.Of(o), want[o])
		}
	}
	if last := r.Last(); last.Seq != 6 || last.Outcome != ReloadInvalid {
		t.Errorf("last: %+v", last)
	}
}

func TestDiffModels(t *testing.T) {
	a := parseReloadConfig(t, reloadBase).Model()
	b := parseReloadConfig(t, strings.Replace(reloadBase, "port = 80", "port = 443", 1)+`
[[vip]]
name = "dns"
address = "192.0.2.53"
protocol = "udp"
port = 53
  [[vip.backend]]
  address = "10.0.0.53"
`).Model()
	got := DiffModels(a, b)
	want := ModelChanges{VIPsAdded: 2, VIPsRemoved: 1, BackendsAdded: 3, BackendsRemoved: 2}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if !DiffModels(a, a).IsZero() {
		t.Errorf("a model differs from itself")
	}
}
