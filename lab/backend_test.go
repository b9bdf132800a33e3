package lab

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBackendHandler(t *testing.T) {
	srv := httptest.NewServer(BackendHandler("backend-7"))
	defer srv.Close()
	c := srv.Client()

	checkGET(t, c, srv.URL+"/", "backend-7\n", "backend-7")
	checkGET(t, c, srv.URL+"/anything/else", "backend-7\n", "backend-7")
	checkDownload(t, c, srv.URL, 3, 100003)
	checkDownload(t, c, srv.URL, 0, 0)
	checkUpload(t, c, srv.URL, 4, 70001)

	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if local := resp.Header.Get("X-Weir-Local"); !strings.HasPrefix(srv.URL, "http://"+local) {
		t.Errorf("X-Weir-Local %q, want the server's address %s", local, srv.URL)
	}
	if resp.Header.Get("X-Weir-Remote") == "" {
		t.Error("no X-Weir-Remote")
	}

	// Uploads that are not the pattern, or not its announced length, fail.
	for name, tc := range map[string]struct {
		query string
		body  io.Reader
	}{
		"wrong seed": {"seed=5", NewPattern(6, 1000)},
		"too short":  {"seed=5&n=1001", NewPattern(5, 1000)},
		"too long":   {"seed=5&n=999", NewPattern(5, 1000)},
	} {
		resp, err := c.Post(srv.URL+"/upload?"+tc.query, "application/octet-stream", tc.body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Errorf("%s: %s, want 422", name, resp.Status)
		}
	}
	for _, q := range []string{"", "n=-1", "n=x", fmt.Sprintf("n=%d", int64(MaxBytes)+1), "n=1&seed=-1"} {
		resp, err := c.Get(srv.URL + "/bytes?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/bytes?%s: %s, want 400", q, resp.Status)
		}
	}
}

func TestURL(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.1", "http://192.0.2.1:80/x"},
		{"2001:db8::1", "http://[2001:db8::1]:80/x"},
	} {
		if got := URL(mustAddr(tc.addr), 80, "/x"); got != tc.want {
			t.Errorf("URL(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}
