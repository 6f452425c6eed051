package matrix

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// maxServerNameLen bounds a server name (the specification allows a
// 255-character DNS name plus a port).
const maxServerNameLen = 255 + 6

// ServerName is a parsed Matrix server name (spec: appendices, "Server
// Name"): a DNS name, an IPv4 literal or a bracketed IPv6 literal, and an
// optional port. Anything else (a path, userinfo, a query, a scheme) is
// refused, so a server name taken from a request can never steer an outgoing
// request somewhere other than that host.
type ServerName struct {
	Host string // DNS name or IP literal, without brackets
	Port int    // 0 when absent
	IP   bool   // Host is an IP literal
}

// ParseServerName validates s against the Matrix server-name grammar.
func ParseServerName(s string) (ServerName, error) {
	if s == "" || len(s) > maxServerNameLen {
		return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
		}
		host, port = s[1:end], s[end+1:]
		if port != "" && (!strings.HasPrefix(port, ":") || port == ":") {
			return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
		}
		port = strings.TrimPrefix(port, ":")
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
		}
		return finishServerName(s, ServerName{Host: host, IP: true}, port, port != "")
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if port == "" {
			return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
		}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() {
			return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
		}
		return finishServerName(s, ServerName{Host: host, IP: true}, port, port != "")
	}
	if !validDNSName(host) {
		return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
	}
	return finishServerName(s, ServerName{Host: strings.ToLower(host)}, port, port != "")
}

func finishServerName(s string, sn ServerName, port string, hasPort bool) (ServerName, error) {
	if !hasPort {
		return sn, nil
	}
	if len(port) > 5 || strings.TrimLeft(port, "0123456789") != "" {
		return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return ServerName{}, fmt.Errorf("%w: %q", ErrInvalidServerName, s)
	}
	sn.Port = p
	return sn, nil
}

// validDNSName accepts 1-255 characters of letters, digits, '-' and '.',
// with no empty label, no label over 63 characters and no leading or
// trailing '-' in a label.
func validDNSName(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// String returns the server name in its canonical form.
func (sn ServerName) String() string {
	h := sn.Host
	if sn.IP && strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if sn.Port != 0 {
		return h + ":" + strconv.Itoa(sn.Port)
	}
	return h
}

// hostPort returns host:port for dialling, with def as the port when none is
// set.
func (sn ServerName) hostPort(def int) string {
	p := sn.Port
	if p == 0 {
		p = def
	}
	return net.JoinHostPort(sn.Host, strconv.Itoa(p))
}

// userIDServer returns the server-name part of a Matrix user ID
// "@localpart:server", or "" when userID is not shaped like one.
func userIDServer(userID string) string {
	if len(userID) < 4 || len(userID) > 255 || userID[0] != '@' {
		return ""
	}
	i := strings.IndexByte(userID, ':')
	if i < 2 || i == len(userID)-1 {
		return ""
	}
	return userID[i+1:]
}

// validUserID reports whether userID is "@localpart:server" with a server
// name ParseServerName accepts and a localpart of the characters the
// specification lets servers accept (appendices, "Historical User IDs":
// %x21-39 / %x3B-7E, printable ASCII without ':'), 255 bytes in all.
func validUserID(userID string) bool {
	server := userIDServer(userID)
	if server == "" {
		return false
	}
	if _, err := ParseServerName(server); err != nil {
		return false
	}
	for i := 1; i < len(userID)-len(server)-1; i++ {
		if c := userID[i]; c < 0x21 || c > 0x7e || c == ':' {
			return false
		}
	}
	return true
}

// roomIDServer returns the server name in a room ID "!opaque:server" when
// it is a valid one, or "" (room version 12 IDs carry no server name).
// The server created the room and is a sensible server to join it through.
func roomIDServer(roomID string) string {
	if len(roomID) < 4 || len(roomID) > 255 || roomID[0] != '!' {
		return ""
	}
	i := strings.IndexByte(roomID, ':')
	if i < 0 {
		return ""
	}
	if _, err := ParseServerName(roomID[i+1:]); err != nil {
		return ""
	}
	return roomID[i+1:]
}
