package appliance

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
	"github.com/weirlb/weir/packet"
)

// dsrLab is a DSR lab with HTTP backends and a running appliance.
type dsrLab struct {
	*lab.DSR
	app     *Appliance
	stopped bool
	weights map[string]uint32 // backend name -> weight
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func dsrModel(d *lab.DSR, weights []uint32) (Model, map[string]uint32) {
	var m Model
	byName := map[string]uint32{}
	for _, vip := range d.VIPs {
		v := VIP{VIPKey: VIPKey{Addr: vip, Proto: packet.ProtoTCP, Port: d.Port}, Name: "web", Mode: ModeDSR}
		for i, b := range d.Backends {
			w := weights[i%len(weights)]
			v.Backends = append(v.Backends, Backend{Addr: b.Addr(vip), Name: b.Name, Weight: w})
			byName[b.Name] = w
		}
		m.VIPs = append(m.VIPs, v)
	}
	return m, byName
}

func newDSRLab(t *testing.T, weights []uint32) *dsrLab {
	testutil.RequirePrivileged(t)
	d, err := lab.NewDSR(lab.DSRConfig{Backends: 3, Queues: 2})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	if err := d.StartHTTP(); err != nil {
		t.Fatalf("start backends: %v", err)
	}
	m, byName := dsrModel(d, weights)
	l := &dsrLab{DSR: d, weights: byName}
	err = d.Appliance.NS.Do(func() error {
		var err error
		l.app, err = Start(Options{Interface: d.Appliance.NIC.Name, Logger: testLogger(t)}, m)
		return err
	})
	if err != nil {
		t.Fatalf("start appliance: %v", err)
	}
	t.Cleanup(func() {
		if !l.stopped {
			l.stop(t)
		}
	})
	return l
}

func (l *dsrLab) stop(t *testing.T) Stats {
	t.Helper()
	l.stopped = true
	st, err := l.app.Stop()
	if err != nil {
		t.Errorf("stop appliance: %v", err)
	}
	if st.Frames.Total != st.Frames.Free {
		t.Errorf("after stop, frames not all free: %+v", st.Frames)
	}
	return st
}

// get fetches / from the VIP over a fresh TCP connection and returns the
// name of the backend that answered.
func get(t *testing.T, d *lab.DSR, vip netip.Addr) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := httpNewRequest(ctx, lab.URL(vip, d.Port, "/"))
	resp, err := d.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(body)), nil
}

func TestDSRLabRealTCP(t *testing.T) {
	l := newDSRLab(t, []uint32{1, 1, 2})
	for _, vip := range l.VIPs {
		counts := map[string]int{}
		const n = 200
		for i := 0; i < n; i++ {
			name, err := get(t, l.DSR, vip)
			if err != nil {
				t.Fatalf("request %d to %s: %v", i, vip, err)
			}
			counts[name]++
		}
		t.Logf("%s: %v", vip, counts)
		for name := range l.weights {
			if counts[name] == 0 {
				t.Errorf("%s: backend %s served nothing: %v", vip, name, counts)
			}
		}
	}
	snmp, err := l.Appliance.NS.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	if snmp.TCP.OutRsts != 0 {
		t.Errorf("appliance stack sent %d TCP resets", snmp.TCP.OutRsts)
	}
	st, _ := l.app.Stats()
	t.Logf("afxdp %v xdp %v total %+v xdp %+v", l.app.AFXDPMode(), l.app.XDPMode(), st.Total, st.XDP)
}
