package httpsrv

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// short are limits small enough for tests; the checks below wait for the
// server to act with a generous deadline, never for a limit to hold.
var short = Timeouts{ReadHeader: 200 * time.Millisecond, Read: 300 * time.Millisecond, Write: 300 * time.Millisecond, Idle: 300 * time.Millisecond}

// generous is how long a test waits for the server to cut a client off.
const generous = 10 * time.Second

// serve starts New(h, short) on loopback and returns its address.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := New(h, short)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String()
}

// readBody reads the request body as the node's handlers do: bounded.
func readBody(w http.ResponseWriter, r *http.Request) {
	if _, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20)); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	_, _ = w.Write([]byte("ok"))
}

// waitClosed reads from c until the server closes it, failing if that does
// not happen within generous.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(generous)))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue // e.g. the 400 for a body cut short
		}
		require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server kept the connection open for %v", generous)
		return
	}
}

func TestSlowClientsCutOff(t *testing.T) {
	addr := serve(t, http.HandlerFunc(readBody))
	for _, tc := range []struct {
		name string
		// talk sends the client's side; it returns when the connection
		// fails or stop is closed.
		talk func(c net.Conn, stop <-chan struct{})
	}{
		{"headers dribbled", func(c net.Conn, stop <-chan struct{}) {
			dribble(c, stop, "POST / HTTP/1.1\r\nHost: node\r\nX-Slow: "+strings.Repeat("a", 1000))
		}},
		{"body dribbled after the headers", func(c net.Conn, stop <-chan struct{}) {
			if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: node\r\nContent-Length: 1000\r\n\r\n"); err != nil {
				return
			}
			dribble(c, stop, strings.Repeat("a", 1000))
		}},
		{"idle keep-alive connection", func(c net.Conn, _ <-chan struct{}) {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: node\r\n\r\n"); err != nil {
				return
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			// then nothing: the connection stays idle
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer c.Close()
			stop := make(chan struct{})
			talked := make(chan struct{})
			go func() { defer close(talked); tc.talk(c, stop) }()
			if tc.name == "idle keep-alive connection" {
				<-talked // the response is read before waiting for the close
			}
			waitClosed(t, c)
			close(stop)
			<-talked
		})
	}
}

// dribble writes s one byte at a time, 20 ms apart, until it is written,
// a write fails or stop is closed.
func dribble(c net.Conn, stop <-chan struct{}, s string) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for i := range len(s) {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return
		}
	}
}

// A hijacked connection (the /rtc websocket) outlives the read and write
// limits: net/http clears its deadlines on Hijack.
func TestHijackedConnectionOutlivesLimits(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		_, _ = rw.WriteString(line)
		_ = rw.Flush()
	}))
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET /rtc HTTP/1.1\r\nHost: node\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)

	// Quiet for longer than every limit, then talk.
	time.Sleep(3 * max(short.Read, short.Write, short.Idle))
	_, err = io.WriteString(c, "still here\n")
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(generous)))
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "still here\n", line)
}

func TestProductionLimitsAllSet(t *testing.T) {
	for name, tt := range map[string]Timeouts{"node": Node(), "appservice": Appservice()} {
		srv := New(http.NotFoundHandler(), tt)
		require.Positive(t, srv.ReadHeaderTimeout, name)
		require.Positive(t, srv.ReadTimeout, name)
		require.Positive(t, srv.WriteTimeout, name)
		require.Positive(t, srv.IdleTimeout, name)
		require.GreaterOrEqual(t, srv.ReadTimeout, srv.ReadHeaderTimeout, name)
	}
}
