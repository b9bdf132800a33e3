package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// checkTCP connects from one namespace to a listener on addr in another and
// exchanges a line each way: reachability, the ping of a TCP lab.
func checkTCP(t *testing.T, from, to *NS, addr netip.Addr) {
	t.Helper()
	ln, err := to.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line := make([]byte, 6)
		if _, err := io.ReadFull(c, line); err != nil {
			served <- err
			return
		}
		_, err = fmt.Fprintf(c, "%s from %s\n", line[:5], to.Name())
		served <- err
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("%s -> %v: %v", from.Name(), ln.Addr(), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%s -> %v: read: %v", from.Name(), ln.Addr(), err)
	}
	if want := "hello from " + to.Name() + "\n"; string(got) != want {
		t.Errorf("%s -> %v: got %q, want %q", from.Name(), ln.Addr(), got, want)
	}
	if err := <-served; err != nil {
		t.Errorf("%s -> %v: server: %v", from.Name(), ln.Addr(), err)
	}
}

// checkGET fetches url with c and checks the body and the backend header.
func checkGET(t *testing.T, c *http.Client, url, wantBody, wantBackend string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != wantBody {
		t.Errorf("GET %s: %s %q, want 200 %q", url, resp.Status, body, wantBody)
	}
	if got := resp.Header.Get("X-Weir-Backend"); got != wantBackend {
		t.Errorf("GET %s: X-Weir-Backend %q, want %q", url, got, wantBackend)
	}
}

// checkDownload streams n bytes of the pattern from url and verifies them.
func checkDownload(t *testing.T, c *http.Client, url string, seed uint64, n int64) {
	t.Helper()
	resp, err := c.Get(fmt.Sprintf("%s/bytes?n=%d&seed=%d", url, n, seed))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", resp.Request.URL, resp.Status)
	}
	if got, err := CheckPattern(resp.Body, seed, n); err != nil {
		t.Errorf("GET %s: %d bytes: %v", resp.Request.URL, got, err)
	}
}

// checkUpload posts n bytes of the pattern to url and expects it accepted.
func checkUpload(t *testing.T, c *http.Client, url string, seed uint64, n int64) {
	t.Helper()
	u := fmt.Sprintf("%s/upload?n=%d&seed=%d", url, n, seed)
	resp, err := c.Post(u, "application/octet-stream", NewPattern(seed, n))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := fmt.Sprintf("ok %d\n", n); resp.StatusCode != http.StatusOK || string(body) != want {
		t.Errorf("POST %s: %s %q, want 200 %q", u, resp.Status, body, want)
	}
}

// checkQueues reads the queue counts of link back from the kernel.
func checkQueues(t *testing.T, n *NS, link string, want int) {
	t.Helper()
	l, err := n.Netlink().LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	if a := l.Attrs(); a.NumRxQueues != want || a.NumTxQueues != want {
		t.Errorf("%s/%s: %d RX and %d TX queues, want %d", n.Name(), link, a.NumRxQueues, a.NumTxQueues, want)
	}
}

// checkOffloadsOff checks that TX checksum offload and GRO read back off.
func checkOffloadsOff(t *testing.T, n *NS, link string) {
	t.Helper()
	if on, err := n.TxChecksum(link); err != nil || on {
		t.Errorf("%s/%s: tx-checksumming %v, %v; want off", n.Name(), link, on, err)
	}
	if on, err := n.GRO(link); err != nil || on {
		t.Errorf("%s/%s: gro %v, %v; want off", n.Name(), link, on, err)
	}
}

// checkSysctl reads key in n and compares it with want.
func checkSysctl(t *testing.T, n *NS, key, want string) {
	t.Helper()
	if got, err := n.ReadSysctl(key); err != nil || got != want {
		t.Errorf("%s: %s = %q, %v; want %q", n.Name(), key, got, err, want)
	}
}

// checkRoute asks the kernel in n how it reaches dst and compares the
// gateway (zero for on-link).
func checkRoute(t *testing.T, n *NS, dst, wantGw netip.Addr) {
	t.Helper()
	rs, err := n.Netlink().RouteGet(dst.AsSlice())
	if err != nil || len(rs) == 0 {
		t.Errorf("%s: route to %v: %v", n.Name(), dst, err)
		return
	}
	var gw netip.Addr
	if rs[0].Gw != nil {
		gw, _ = netip.AddrFromSlice(rs[0].Gw)
		gw = gw.Unmap()
	}
	if gw != wantGw {
		t.Errorf("%s: route to %v via %v, want via %v", n.Name(), dst, gw, wantGw)
	}
}

// checkHasAddr checks that link in n holds the address a.
func checkHasAddr(t *testing.T, n *NS, link string, a netip.Prefix) {
	t.Helper()
	l, err := n.Netlink().LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := n.Netlink().AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, x := range addrs {
		if x.IPNet.String() == a.String() {
			return
		}
		have = append(have, x.IPNet.String())
	}
	t.Errorf("%s/%s: no %v among %s", n.Name(), link, a, strings.Join(have, " "))
}

// checkClosed checks that none of the namespaces is mounted any more and
// that they refuse work.
func checkClosed(t *testing.T, nss []*NS) {
	t.Helper()
	for _, n := range nss {
		if names, _ := ListNS(n.Name()); len(names) != 0 {
			t.Errorf("%s still mounted", n.Name())
		}
		if n.Netlink() != nil {
			t.Errorf("%s still has a netlink handle", n.Name())
		}
	}
	checkThreadsHome(t)
}
