package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"entente.dev/entente/internal/logging"
)

// MinSecretLength is the shortest LiveKit API secret accepted, in characters. Tokens are
// HS256-signed with it; 32 characters keeps brute force out of reach.
const MinSecretLength = 32

// Validate checks every option and returns a *ValidationError listing all problems, or nil.
func (c *Config) Validate() error {
	var v validator
	if c.DataDir == "" {
		v.add("data_dir must not be empty")
	}
	v.listen("server.listen", c.Server.Listen)
	if c.Metrics.Listen != "" {
		v.listen("metrics.listen", c.Metrics.Listen)
	}
	if c.Debug.PprofListen != "" {
		v.listen("debug.pprof_listen", c.Debug.PprofListen)
		if host, _, err := net.SplitHostPort(c.Debug.PprofListen); err == nil && !isLoopback(host) {
			v.add("debug.pprof_listen %q must be a loopback address: the profiler exposes the node's internals", c.Debug.PprofListen)
		}
	}
	for i, p := range c.Server.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			v.add("server.trusted_proxies[%d] %q is not an IP address or CIDR prefix", i, p)
		}
	}
	if c.Server.PublicURL != "" {
		v.httpURL("server.public_url", c.Server.PublicURL)
	}
	if _, err := logging.ParseLevel(c.Log.Level); err != nil {
		v.add("log.level: %v", err)
	}
	if err := logging.CheckFormat(c.Log.Format); err != nil {
		v.add("log.format: %v", err)
	}
	if c.RTC.UDPPort < 1 || c.RTC.UDPPort > 65535 {
		v.add("rtc.udp_port %d is out of range 1..65535", c.RTC.UDPPort)
	}
	if c.RTC.TCPPort < 0 || c.RTC.TCPPort > 65535 {
		v.add("rtc.tcp_port %d is out of range 0..65535 (0 disables ICE over TCP)", c.RTC.TCPPort)
	}
	if _, err := netip.ParseAddr(c.RTC.BindAddress); err != nil {
		v.add("rtc.bind_address %q is not an IP address", c.RTC.BindAddress)
	}
	for i, a := range c.RTC.AnnounceAddresses {
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
			v.add("rtc.announce_addresses[%d] %q is not an IP address", i, a)
		case ip.IsUnspecified():
			v.add("rtc.announce_addresses[%d] %q is unspecified; announce an address clients can reach", i, a)
		}
	}
	if c.TURN.Enabled {
		v.turn(c)
	}
	v.positive("room.empty_timeout", c.Room.EmptyTimeout)
	v.positive("room.departure_timeout", c.Room.DepartureTimeout)
	if c.Room.MaxParticipants < 0 {
		v.add("room.max_participants %d must be 0 (no limit) or more", c.Room.MaxParticipants)
	}
	if c.Room.HistoryRetention.Duration < 0 {
		v.add("room.history_retention %s must be 0 (keep forever) or more", c.Room.HistoryRetention)
	}
	if c.Audit.Retention.Duration < 0 {
		v.add("audit.retention %s must be 0 (keep forever) or more", c.Audit.Retention)
	}
	if c.Web.GuestRate < 0 {
		v.add("web.guest_rate %g must be 0 (no limit) or more", c.Web.GuestRate)
	}
	if c.Web.GuestRate > 0 && c.Web.GuestBurst < 1 {
		v.add("web.guest_burst %d must be at least 1 while web.guest_rate limits guests", c.Web.GuestBurst)
	}
	v.positive("livekit.token_ttl", c.LiveKit.TokenTTL)
	keys := make([]string, 0, len(c.LiveKit.Keys))
	for k := range c.LiveKit.Keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v.apiKey(k, c.LiveKit.Keys[k])
	}
	if c.Matrix != nil {
		v.matrix(c.Matrix)
		v.matrixMeetings(c)
	}
	if c.Federation != nil {
		v.federation(c)
	}
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

type validator struct{ problems []string }

func (v *validator) add(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

func (v *validator) positive(name string, d Duration) {
	if d.Duration <= 0 {
		v.add("%s %s must be positive", name, d)
	}
}

func (v *validator) turn(c *Config) {
	t := c.TURN
	for _, p := range []struct {
		name string
		port int
	}{{"turn.udp_port", t.UDPPort}, {"turn.tls_port", t.TLSPort}} {
		if p.port < 0 || p.port > 65535 {
			v.add("%s %d is out of range 0..65535 (0: none)", p.name, p.port)
		}
	}
	if t.UDPPort == 0 && t.TLSPort == 0 {
		v.add("turn.udp_port and turn.tls_port are both 0: the TURN server would listen nowhere; set one or disable [turn]")
	}
	if t.UDPPort != 0 && t.UDPPort == c.RTC.UDPPort {
		v.add("turn.udp_port %d is rtc.udp_port: TURN needs a port of its own", t.UDPPort)
	}
	if t.TLSPort != 0 && t.TLSPort == c.RTC.TCPPort {
		v.add("turn.tls_port %d is rtc.tcp_port: TURN needs a port of its own", t.TLSPort)
	}
	if _, port, err := net.SplitHostPort(c.Server.Listen); err == nil && t.TLSPort != 0 && port == strconv.Itoa(t.TLSPort) {
		v.add("turn.tls_port %d is server.listen's port: TURN needs a port of its own (or another address)", t.TLSPort)
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add("turn.cert_file and turn.key_file go together: set both, or neither for a self-signed certificate")
	}
	if t.Host != "" && !validHost(t.Host) {
		v.add("turn.host %q is not a host name or IP address (no scheme, no port)", t.Host)
	}
	if t.Realm == "" {
		v.add("turn.realm must not be empty")
	}
	if t.CredentialLifetime.Duration <= 0 || t.CredentialLifetime.Duration > maxCredentialLifetime {
		v.add("turn.credential_lifetime %s must be positive and at most %s", t.CredentialLifetime, Duration{maxCredentialLifetime})
	}
	// With a specified bind address or an announced one, TURNHost is never empty.
	if ip, err := netip.ParseAddr(c.RTC.BindAddress); err == nil && ip.IsUnspecified() && len(c.RTC.AnnounceAddresses) == 0 {
		v.add("[turn] needs rtc.announce_addresses when rtc.bind_address is unspecified: it relays only to the addresses the node announces")
	}
}

func (v *validator) listen(name, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add("%s %q is not host:port", name, addr)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.add("%s %q: port must be a number in 0..65535", name, addr)
	}
}

func (v *validator) httpURL(name, raw string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add("%s %q is not an absolute http(s) URL", name, raw)
	}
}

func (v *validator) apiKey(key, secret string) {
	switch {
	case key == "":
		v.add("livekit.keys: a key name is empty")
	case isPlaceholder(key):
		v.add("livekit.keys: key name %q is a placeholder; choose a real name", key)
	}
	name := fmt.Sprintf("livekit.keys.%s", key)
	switch {
	case isPlaceholder(secret):
		v.add("%s: the secret is a placeholder; generate one, e.g. with `openssl rand -base64 32`", name)
	case utf8.RuneCountInString(secret) < MinSecretLength:
		v.add("%s: the secret has %d characters, want at least %d", name, utf8.RuneCountInString(secret), MinSecretLength)
	}
}

// placeholderWords are refused anywhere in a value (after lower-casing and dropping separators);
// they are long enough never to occur by chance in a generated secret.
var placeholderWords = []string{"changeme", "replaceme", "yoursecret", "yourkey", "yourapikey", "placeholder", "insertsecret", "secretgoeshere"}

// placeholderValues are refused as whole values.
var placeholderValues = []string{"secret", "password", "apikey", "apisecret", "todo", "fixme"}

// isPlaceholder reports whether s looks like a value copied from documentation rather than
// chosen: "CHANGE_ME", "<your secret>", "xxxxxxxx", "your-secret", "secret".
func isPlaceholder(s string) bool {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "<") && strings.HasSuffix(t, ">") {
		return true
	}
	norm := strings.Map(func(r rune) rune {
		switch r {
		case '-', '_', ' ', '.', '\t':
			return -1
		}
		return r
	}, strings.ToLower(t))
	if norm == "" {
		return t != ""
	}
	if first, _ := utf8.DecodeRuneInString(norm); strings.Trim(norm, string(first)) == "" && len(norm) > 1 {
		return true // one character repeated: "xxxxxxxx", "00000000"
	}
	if slices.Contains(placeholderValues, norm) {
		return true
	}
	for _, w := range placeholderWords {
		if strings.Contains(norm, w) {
			return true
		}
	}
	return false
}

// ParsePrefix reads a server.trusted_proxies entry: an IP address (a prefix of one address) or
// a CIDR prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// validHost reports whether s is an IP address or a DNS name (letters, digits, hyphens and dots,
// labels of 1 to 63 characters, 253 in all).
func validHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// isLoopback reports whether host is localhost or a loopback IP.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
