package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
)

// Helpers shared by the tests of `weir run` and `weir reload` in a lab.

// newRunLab builds a DSR lab with n HTTP backends and two queues on the
// appliance's interface, removed when the test ends.
func newRunLab(t *testing.T, n int) *lab.DSR {
	t.Helper()
	testutil.RequirePrivileged(t)
	d, err := lab.NewDSR(lab.DSRConfig{Prefix: "weirrun", Backends: n, Queues: 2})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("remove lab: %v", err)
		}
	})
	if err := d.StartHTTP(); err != nil {
		t.Fatalf("start backends: %v", err)
	}
	return d
}

// runConfig renders the lab's configuration (lab.toml.tmpl, the one `weir
// lab` runs with) for the IPv4 VIP and the given backends; weights index
// d.Backends, and a zero weight leaves that backend out of the file.
func runConfig(t *testing.T, d *lab.DSR, weights []uint32) []byte {
	t.Helper()
	topo := labTopology{Interface: d.Appliance.NIC.Name, VIP: d.VIP4, Port: d.Port, Mode: "dsr", MTU: 1500}
	for i, w := range weights {
		if w == 0 {
			continue
		}
		b := d.Backends[i]
		topo.Backends = append(topo.Backends, labBackend{Name: b.Name, Addr: b.Addr(d.VIP4), Weight: w})
	}
	text, err := renderLabConfig(labFlags{mode: "dsr"}, topo)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// writeFile replaces path's content the way an operator's editor or
// configuration management does: a new file renamed over the old one.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := writeFileAtomic(path, data); err != nil {
		t.Fatal(err)
	}
}

// getVIP makes one HTTP request to the lab's IPv4 VIP on a fresh connection
// and returns the name of the backend that answered.
func getVIP(d *lab.DSR) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, lab.URL(d.VIP4, d.Port, "/"), nil)
	if err != nil {
		return "", err
	}
	resp, err := d.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

// xdpProgram returns the ID of the XDP program attached to the appliance's
// interface, 0 if none.
func xdpProgram(t *testing.T, d *lab.DSR) uint32 {
	t.Helper()
	l, err := d.Appliance.NS.Netlink().LinkByName(d.Appliance.NIC.Name)
	if err != nil {
		t.Fatalf("appliance interface: %v", err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId
	}
	return 0
}

// logBuffer is a bytes.Buffer safe for a child's output and a test reading
// it at the same time.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the buffer's lines that contain every one of subs.
func (s *logBuffer) lines(subs ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	for sc.Scan() {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(sc.Text(), sub)
		}
		if ok {
			out = append(out, sc.Text())
		}
	}
	return out
}

// tempDirFor returns a fresh directory that the user uid can read and
// traverse (t.TempDir's parent is private to root), and write if writable.
func tempDirFor(t *testing.T, uid int, writable bool) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o005); err != nil {
				t.Fatal(err)
			}
		}
	}
	if writable {
		if err := os.Chown(dir, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
