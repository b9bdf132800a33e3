package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// MaxBytes bounds /bytes and /upload transfers (1 TiB): enough for any
// benchmark, small enough that a typo cannot stream forever.
const MaxBytes = 1 << 40

// BackendHandler returns the handler lab backends serve by default:
//
//	GET  /                      "<name>\n"
//	GET  /bytes?n=N&seed=S      N bytes of the pattern of seed S (default 0)
//	POST /upload?n=N&seed=S     reads the body and checks it against the pattern
//	                            (n optional): 200 "ok <bytes>\n", or 422 with
//	                            the first difference
//
// Every response carries X-Weir-Backend (name), X-Weir-Remote (the client's
// address and port as the backend saw them) and X-Weir-Local (the address the
// connection arrived on: the VIP when it came through the load balancer).
func BackendHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, seed, err := patternParams(r, true)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.Copy(w, NewPattern(seed, n))
	})
	upload := func(w http.ResponseWriter, r *http.Request) {
		n, seed, err := patternParams(r, false)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got, err := CheckPattern(http.MaxBytesReader(w, r.Body, MaxBytes), seed, n)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		fmt.Fprintf(w, "ok %d\n", got)
	}
	mux.HandleFunc("POST /upload", upload)
	mux.HandleFunc("PUT /upload", upload)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s\n", name)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Weir-Backend", name)
		h.Set("X-Weir-Remote", r.RemoteAddr)
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			h.Set("X-Weir-Local", a.String())
		}
		mux.ServeHTTP(w, r)
	})
}

// patternParams reads n (required for /bytes, -1 when absent for /upload)
// and seed (default 0) from the query.
func patternParams(r *http.Request, needN bool) (n int64, seed uint64, err error) {
	q := r.URL.Query()
	n = -1
	if s := q.Get("n"); s != "" {
		n, err = strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > MaxBytes {
			return 0, 0, fmt.Errorf("n=%q: want a byte count from 0 to %d", s, int64(MaxBytes))
		}
	} else if needN {
		return 0, 0, errors.New("missing n (byte count)")
	}
	if s := q.Get("seed"); s != "" {
		seed, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("seed=%q: want an unsigned integer", s)
		}
	}
	return n, seed, nil
}

// URL returns "http://addr:port" + path, with IPv6 addresses bracketed.
func URL(addr netip.Addr, port uint16, path string) string {
	return "http://" + netip.AddrPortFrom(addr, port).String() + path
}

// Backend is a lab backend: a host with the VIPs on its loopback and,
// once Serve or the topology's StartHTTP ran, an HTTP server.
type Backend struct {
	Host
	// Gateway4 and Gateway6 are the backend's default routes in the routed
	// lab; zero in the DSR lab, where everything is on-link.
	Gateway4, Gateway6 netip.Addr
	// Port is the TCP port Serve listens on, on every address.
	Port uint16

	mu     sync.Mutex
	srv    *http.Server
	served chan error
}

// Serve starts an HTTP server with handler h (BackendHandler(b.Name) if nil)
// on b.Port of every address of the backend's namespace, VIPs included,
// over IPv4 and IPv6. It fails if the backend is already serving.
func (b *Backend) Serve(h http.Handler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return fmt.Errorf("lab: %s: already serving", b.Name)
	}
	if h == nil {
		h = BackendHandler(b.Name)
	}
	ln, err := b.NS.Listen("tcp", ":"+strconv.Itoa(int(b.Port)))
	if err != nil {
		return fmt.Errorf("lab: %s: serve: %w", b.Name, err)
	}
	b.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	b.served = make(chan error, 1)
	go func(srv *http.Server, done chan<- error) { done <- srv.Serve(ln) }(b.srv, b.served)
	return nil
}

// Serving reports whether the backend's HTTP server is running.
func (b *Backend) Serving() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srv != nil
}

// URL returns the URL of path on the backend's server at addr (one of its
// own addresses or a VIP).
func (b *Backend) URL(addr netip.Addr, path string) string { return URL(addr, b.Port, path) }

// Stop shuts the HTTP server down, giving requests in flight a second to
// finish before their connections are closed. It does nothing if the
// backend is not serving.
func (b *Backend) Stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := b.srv.Shutdown(ctx)
	if err != nil {
		err = b.srv.Close()
	}
	if serr := <-b.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	b.srv, b.served = nil, nil
	if err != nil {
		return fmt.Errorf("lab: %s: stop serving: %w", b.Name, err)
	}
	return nil
}
