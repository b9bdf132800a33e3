package appliance

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weirlb/weir/lab"
)

// download fetches n bytes of the pattern of seed from the VIP over one
// connection and checks every byte. It returns the backend that served it.
func download(ctx context.Context, d *lab.DSR, vip netip.Addr, n int64, seed uint64) (string, error) {
	req, err := httpNewRequest(ctx, lab.URL(vip, d.Port, fmt.Sprintf("/bytes?n=%d&seed=%d", n, seed)))
	if err != nil {
		return "", err
	}
	resp, err := d.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	backend := resp.Header.Get("X-Weir-Backend")
	if resp.StatusCode != http.StatusOK {
		return backend, fmt.Errorf("status %s", resp.Status)
	}
	if _, err := lab.CheckPattern(resp.Body, seed, n); err != nil {
		return backend, err
	}
	return backend, nil
}

// upload sends n bytes of the pattern of seed to the VIP over one
// connection; the backend checks every byte.
func upload(ctx context.Context, d *lab.DSR, vip netip.Addr, n int64, seed uint64) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		lab.URL(vip, d.Port, fmt.Sprintf("/upload?n=%d&seed=%d", n, seed)), lab.NewPattern(seed, n))
	if err != nil {
		return "", err
	}
	req.ContentLength = n
	resp, err := d.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	backend := resp.Header.Get("X-Weir-Backend")
	if err != nil {
		return backend, err
	}
	if got, want := strings.TrimSpace(string(body)), fmt.Sprintf("ok %d", n); resp.StatusCode != http.StatusOK || got != want {
		return backend, fmt.Errorf("backend answered %s %q, want %q", resp.Status, got, want)
	}
	return backend, nil
}

// TestDatapathLongTransfer moves 100 MiB each way through one connection
// per VIP and family. A download sends only the client's ACKs through the
// appliance (the data returns directly); an upload sends the data itself
// through the AF_XDP workers, full-size frames at full speed. Every byte is
// checked against the pattern, and the counters add up afterwards.
func TestDatapathLongTransfer(t *testing.T) {
	const n = 100 << 20
	l := newDSRLab(t, []uint32{1, 1, 1})
	seed := rand.Uint64()
	for _, vip := range l.VIPs {
		for _, dir := range []struct {
			name string
			fn   func(context.Context, *lab.DSR, netip.Addr, int64, uint64) (string, error)
		}{{"download", download}, {"upload", upload}} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			start := time.Now()
			backend, err := dir.fn(ctx, l.DSR, vip, n, seed)
			cancel()
			if err != nil {
				t.Fatalf("%s %d bytes via %s (backend %q): %v", dir.name, n, vip, backend, err)
			}
			el := time.Since(start)
			t.Logf("%s %s: %d MiB from %s in %v (%.0f Mbit/s)", vip, dir.name, n>>20, backend, el.Round(time.Millisecond), float64(8*n)/el.Seconds()/1e6)
		}
	}
	st := l.settle(t)
	t.Logf("appliance: %+v; xdp %+v", st.Total, st.XDP)
	for _, w := range st.Workers {
		t.Logf("queue %d: rx %d tx %d; ring %+v", w.Queue, w.Counters.RXPackets, w.Counters.TXPackets, w.Ring)
	}
	final := l.stop(t)
	checkCounters(t, final, l.app.RealStats())
	if final.Total.TXBytes < 2*n {
		t.Errorf("appliance forwarded %d bytes for %d bytes uploaded", final.Total.TXBytes, 2*n)
	}
}
