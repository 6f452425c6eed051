// Package netnstest builds sealed networks of agencies for tests: one Linux
// network namespace per agency (its homeserver, its node, its clients), each
// joined by a veth pair to a router namespace, and no default route
// anywhere, so that nothing started in them can reach a host outside the
// agencies. docs/testing-networks.md describes the topology.
//
// It needs root and iproute2 (`ip`); Cut needs nftables (`nft`), Capture
// tcpdump. Without them Require skips the test, or fails it when CI=true.
//
// The test process stays in its own namespace: it reaches into an agency
// with Agency.DialContext and Agency.Listen, which make their socket inside
// the agency's namespace (a socket keeps the namespace it was made in), and
// starts programs there with Agency.Command (`ip netns exec`, which also
// lays /etc/netns/NAME/hosts over /etc/hosts: the agency's own DNS).
//
// It imports only the standard library and golang.org/x/sys: never media,
// bridge or web (internal/archtest).
package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Topology is a router namespace and the agencies' namespaces around it.
type Topology struct {
	// Router is the router namespace's name.
	Router   string
	Agencies []*Agency
	id       string

	mu   sync.Mutex
	cuts map[[2]int]bool
}

// Agency is one agency's namespace.
type Agency struct {
	// Name is the namespace's name (for `ip netns exec`).
	Name string
	// Index is its place in Topology.Agencies.
	Index int
	// Addr is its one address, 10.77.<Index+1>.2; the router is .1.
	Addr string
	// routerIf is the router's end of its veth pair, agencyIf its own.
	routerIf, agencyIf string
	hostsDir           string
}

// Require skips t (fails it when CI=true) unless this process can make
// namespaces and the tools named are installed.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("sealed-network tests need %s (scripts/install-test-deps.sh installs the tools)", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// New makes n agencies around a router, each with a route to the others
// through it and none elsewhere, and removes them all when t ends.
func New(t testing.TB, n int) *Topology {
	t.Helper()
	Require(t)
	if n < 1 || n > 9 {
		t.Fatalf("netnstest: %d agencies (1 to 9)", n)
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b[:])
	top := &Topology{Router: "ent" + id + "r", id: id, cuts: map[[2]int]bool{}}
	t.Cleanup(func() { top.remove(t) })
	top.run(t, "ip", "netns", "add", top.Router)
	top.run(t, "ip", "-n", top.Router, "link", "set", "lo", "up")
	top.run(t, "ip", "netns", "exec", top.Router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	for i := range n {
		a := &Agency{
			Name: fmt.Sprintf("ent%s%c", id, 'a'+i), Index: i,
			Addr: fmt.Sprintf("10.77.%d.2", i+1), routerIf: fmt.Sprintf("e%sr%d", id, i), agencyIf: fmt.Sprintf("e%sa%d", id, i),
		}
		agencyIf := a.agencyIf
		top.run(t, "ip", "netns", "add", a.Name)
		top.run(t, "ip", "-n", a.Name, "link", "set", "lo", "up")
		top.run(t, "ip", "link", "add", agencyIf, "netns", a.Name, "type", "veth", "peer", "name", a.routerIf, "netns", top.Router)
		top.run(t, "ip", "-n", a.Name, "addr", "add", a.Addr+"/24", "dev", agencyIf)
		top.run(t, "ip", "-n", a.Name, "link", "set", agencyIf, "up")
		top.run(t, "ip", "-n", top.Router, "addr", "add", fmt.Sprintf("10.77.%d.1/24", i+1), "dev", a.routerIf)
		top.run(t, "ip", "-n", top.Router, "link", "set", a.routerIf, "up")
		// The other agencies, and nothing else: no default route.
		top.run(t, "ip", "-n", a.Name, "route", "add", "10.77.0.0/16", "via", fmt.Sprintf("10.77.%d.1", i+1))
		top.Agencies = append(top.Agencies, a)
	}
	return top
}

func (top *Topology) run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// remove deletes the namespaces (their veth pairs go with them) and the
// agencies' /etc/netns files.
func (top *Topology) remove(t testing.TB) {
	for _, a := range top.Agencies {
		if out, err := exec.Command("ip", "netns", "del", a.Name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v %s", a.Name, err, out)
		}
		if a.hostsDir != "" {
			_ = os.RemoveAll(a.hostsDir)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", top.Router).CombinedOutput(); err != nil {
		t.Logf("ip netns del %s: %v %s", top.Router, err, out)
	}
}

// SetHosts gives the agency its own name resolution: /etc/netns/NAME/hosts,
// which `ip netns exec` (Command) lays over /etc/hosts, maps each name to
// the address given. It is removed with the topology.
func (a *Agency) SetHosts(t testing.TB, names map[string]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n")
	for name, addr := range names {
		fmt.Fprintf(&b, "%s %s\n", addr, name)
	}
	dir := filepath.Join("/etc/netns", a.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a.hostsDir = dir
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Command is exec.Command running name inside the agency's namespace.
// `ip netns exec` execs name in its own process, so the Cmd's Process is
// the program's own (signals reach it).
func (a *Agency) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", a.Name, name}, args...)...)
}

// CommandContext is Command with a context.
func (a *Agency) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", a.Name, name}, args...)...)
}

// inside runs f on an OS thread moved into the namespace ns, then moves the
// thread back. A thread that cannot be moved back is never reused (the
// goroutine exits locked to it, and Go ends the thread).
func inside(ns string, f func() error) error {
	runtime.LockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netnstest: own namespace: %w", err)
	}
	defer unix.Close(self)
	target, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netnstest: namespace %s: %w", ns, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netnstest: enter %s: %w", ns, err)
	}
	ferr := f()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread()
	}
	return ferr
}

// DialContext dials from inside the agency's namespace.
func (a *Agency) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inside(a.Name, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the agency's namespace.
func (a *Agency) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := inside(a.Name, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket (UDP) inside the agency's namespace.
func (a *Agency) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := inside(a.Name, func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// HTTPClient is an HTTP client whose connections start inside the
// agency's namespace.
func (a *Agency) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: a.DialContext}}
}

// Cut drops, in the router, every packet between agencies i and j (both
// ways), until Heal. The links to other agencies stay.
func (top *Topology) Cut(t testing.TB, i, j int) {
	t.Helper()
	Require(t, "nft")
	top.mu.Lock()
	defer top.mu.Unlock()
	if len(top.cuts) == 0 {
		top.nft(t, "add table inet netnstest")
		top.nft(t, "add chain inet netnstest forward { type filter hook forward priority 0 ; policy accept ; }")
	}
	ai, aj := top.Agencies[i], top.Agencies[j]
	top.nft(t, fmt.Sprintf("add rule inet netnstest forward ip saddr %s ip daddr %s drop comment \"cut %d-%d\"", ai.Addr, aj.Addr, i, j))
	top.nft(t, fmt.Sprintf("add rule inet netnstest forward ip saddr %s ip daddr %s drop comment \"cut %d-%d\"", aj.Addr, ai.Addr, i, j))
	top.cuts[[2]int{i, j}] = true
}

// Heal lets every packet through the router again.
func (top *Topology) Heal(t testing.TB) {
	t.Helper()
	top.mu.Lock()
	defer top.mu.Unlock()
	if len(top.cuts) == 0 {
		return
	}
	top.nft(t, "delete table inet netnstest")
	clear(top.cuts)
}

func (top *Topology) nft(t testing.TB, cmd string) {
	t.Helper()
	top.run(t, "ip", "netns", "exec", top.Router, "nft", cmd)
}

// Capture is a packet capture in the router namespace.
type Capture struct {
	t       testing.TB
	cmd     *exec.Cmd
	file    string
	errb    *syncBuffer
	done    chan error
	stopped sync.Once
}

// Capture starts tcpdump on every interface of the router, writing the
// packets' first 128 bytes to a file as they come (cheap enough to keep
// up with a call on a loaded machine, with a 16 MiB buffer; immediate
// mode, or the kernel's last block is lost when it stops); Flows stops it
// and reads the file.
func (top *Topology) Capture(t testing.TB) *Capture {
	t.Helper()
	Require(t, "tcpdump")
	c := &Capture{t: t, done: make(chan error, 1), file: filepath.Join(t.TempDir(), "router.pcap"), errb: &syncBuffer{}}
	c.cmd = exec.Command("ip", "netns", "exec", top.Router, "tcpdump", "-i", "any", "--immediate-mode", "-n", "-s", "128", "-B", "16384", "-w", c.file, "ip")
	c.cmd.Stderr = c.errb
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() { c.stop() })
	// tcpdump says "listening on" once it captures.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.errb.String(), "listening on") {
		select {
		case err := <-c.done:
			c.done <- err
			c.stopped.Do(func() {})
			t.Fatalf("tcpdump exited: %v\n%s", err, c.errb.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start: %s", c.errb.String())
		}
	}
	return c
}

// stop ends tcpdump (SIGINT: it writes what it holds) and waits for it.
func (c *Capture) stop() {
	c.stopped.Do(func() {
		_ = c.cmd.Process.Signal(unix.SIGINT)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

// Dropped is how many packets the kernel dropped before tcpdump read
// them, as tcpdump reported when it stopped (after Flows).
func (c *Capture) Dropped() int {
	for _, line := range strings.Split(c.errb.String(), "\n") {
		if n, rest, ok := strings.Cut(strings.TrimSpace(line), " packets dropped by kernel"); ok && rest == "" {
			if v, err := strconv.Atoi(n); err == nil {
				return v
			}
		}
	}
	return 0
}

// Flow is one direction of traffic the router received, with its packets
// and their bytes (UDP payload or IP length, as tcpdump gives it).
type Flow struct {
	Proto   string // "UDP", "TCP", "ICMP", …
	Src     string // address:port
	Dst     string
	Packets int
	Bytes   int
}

// Flows stops the capture and returns what reached the router, by
// protocol, source and destination. A capture on "any" sees a forwarded
// packet twice (in on one veth, out on another): only its way in counts.
func (c *Capture) Flows() []Flow {
	c.t.Helper()
	c.stop()
	out, err := exec.Command("tcpdump", "-r", c.file, "-n", "-q", "-tt").Output()
	if err != nil {
		c.t.Fatalf("tcpdump -r %s: %v", c.file, err)
	}
	type key struct{ proto, src, dst string }
	counts := map[key]*Flow{}
	var order []key
	for _, line := range strings.Split(string(out), "\n") {
		f, in, ok := parseTcpdumpLine(line)
		if !ok || !in {
			continue
		}
		k := key{f.Proto, f.Src, f.Dst}
		if counts[k] == nil {
			counts[k] = &Flow{Proto: f.Proto, Src: f.Src, Dst: f.Dst}
			order = append(order, k)
		}
		counts[k].Packets++
		counts[k].Bytes += f.Bytes
	}
	flows := make([]Flow, 0, len(order))
	for _, k := range order {
		flows = append(flows, *counts[k])
	}
	return flows
}

// parseTcpdumpLine reads `tcpdump -i any -n -q -tt` lines such as
//
//	1733250000.123456 veth0 In  IP 10.77.1.2.7882 > 10.77.2.2.7882: UDP, length 120
//	1733250000.123456 veth0 Out IP 10.77.1.2.45678 > 10.77.2.2.8448: tcp 0
//
// into one packet's flow (Packets 1, Bytes its length) and whether it was
// on its way in.
func parseTcpdumpLine(line string) (f Flow, in, ok bool) {
	fields := strings.Fields(line)
	ip := -1
	for i, f := range fields {
		if f == "IP" {
			ip = i
			break
		}
	}
	if ip < 0 || len(fields) < ip+5 || fields[ip+2] != ">" {
		return Flow{}, false, false
	}
	src, dst := fields[ip+1], strings.TrimSuffix(fields[ip+3], ":")
	proto := strings.TrimSuffix(fields[ip+4], ",")
	f = Flow{Proto: strings.ToUpper(proto), Src: dotPort(src), Dst: dotPort(dst), Packets: 1}
	// The length is the last number: "UDP, length 120", "tcp 0", "ICMP
	// echo request, id 1, seq 1, length 64".
	if n, err := strconv.Atoi(fields[len(fields)-1]); err == nil {
		f.Bytes = n
	}
	return f, ip > 0 && fields[ip-1] == "In", true
}

// dotPort turns tcpdump's "10.77.1.2.7882" into "10.77.1.2:7882"; an
// address without a port (ICMP) stays as it is.
func dotPort(s string) string {
	if strings.Count(s, ".") == 4 {
		i := strings.LastIndex(s, ".")
		return s[:i] + ":" + s[i+1:]
	}
	return s
}

// syncBuffer is a buffer a command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TrackConnections turns connection tracking on in the agency's namespace
// (a ruleset that counts new flows makes the kernel track every flow there),
// so that Connections lists every flow its programs open, UDP included.
func (a *Agency) TrackConnections(t testing.TB) {
	t.Helper()
	Require(t, "nft", "conntrack")
	for _, cmd := range []string{
		"add table inet netnstest",
		"add chain inet netnstest out { type filter hook output priority 0 ; policy accept ; }",
		"add rule inet netnstest out ct state new counter",
	} {
		if out, err := exec.Command("ip", "netns", "exec", a.Name, "nft", cmd).CombinedOutput(); err != nil {
			t.Fatalf("nft %s in %s: %v\n%s", cmd, a.Name, err, out)
		}
	}
}

// Conn is one tracked flow as its first packet made it.
type Conn struct {
	Proto string // "tcp", "udp", …
	Src   string // address:port
	Dst   string
}

// Connections lists the flows tracked in the agency's namespace
// (TrackConnections), open or recently ended.
func (a *Agency) Connections(t testing.TB) []Conn {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", a.Name, "conntrack", "-L").Output()
	if err != nil {
		t.Fatalf("conntrack -L in %s: %v", a.Name, err)
	}
	var conns []Conn
	for _, line := range strings.Split(string(out), "\n") {
		if c, ok := parseConntrackLine(line); ok {
			conns = append(conns, c)
		}
	}
	return conns
}

// parseConntrackLine reads the original direction of a `conntrack -L`
// line such as
//
//	udp      17 29 src=10.77.1.2 dst=10.77.2.2 sport=7882 dport=7882 src=10.77.2.2 dst=10.77.1.2 sport=7882 dport=7882 [ASSURED] mark=0 use=1
func parseConntrackLine(line string) (Conn, bool) {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return Conn{}, false
	}
	c := Conn{Proto: fields[0]}
	var src, dst, sport, dport string
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		// The first of each key is the original direction.
		switch {
		case k == "src" && src == "":
			src = v
		case k == "dst" && dst == "":
			dst = v
		case k == "sport" && sport == "":
			sport = v
		case k == "dport" && dport == "":
			dport = v
		}
	}
	if src == "" || dst == "" {
		return Conn{}, false
	}
	c.Src, c.Dst = src, dst
	if sport != "" {
		c.Src, c.Dst = net.JoinHostPort(src, sport), net.JoinHostPort(dst, dport)
	}
	return c, true
}

// Socket is a TCP or UDP socket of a program in the agency's namespace.
type Socket struct {
	Proto   string // "tcp" or "udp"
	Local   string
	Peer    string // "*:*" for an unconnected UDP socket
	Program string // the owning program's name, as ss shows it
}

// Sockets lists the namespace's TCP and UDP sockets with their programs
// (`ss -tuanpH`).
func (a *Agency) Sockets(t testing.TB) []Socket {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", a.Name, "ss", "-tuanpH").Output()
	if err != nil {
		t.Fatalf("ss in %s: %v", a.Name, err)
	}
	var socks []Socket
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		s := Socket{Proto: f[0], Local: f[4], Peer: f[5]}
		if len(f) > 6 {
			// users:(("chromium",pid=12,fd=3))
			if _, rest, ok := strings.Cut(f[6], `(("`); ok {
				s.Program, _, _ = strings.Cut(rest, `"`)
			}
		}
		socks = append(socks, s)
	}
	return socks
}
