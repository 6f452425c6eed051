package config_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/config"
)

// examplePath is config.example.toml at the repository root.
var examplePath = filepath.Join("..", "..", "config.example.toml")

const goodSecret = "Zq3v8R1xTn6pWc0yLb4mHs7dKf2gJa9e" // 32 characters

func TestDefaultIsValid(t *testing.T) {
	require.NoError(t, config.Default().Validate())
}

func TestDefaultIsFresh(t *testing.T) {
	a := config.Default()
	a.LiveKit.Keys["k"] = goodSecret
	a.RTC.AnnounceAddresses = append(a.RTC.AnnounceAddresses, "10.0.0.1")
	require.Empty(t, config.Default().LiveKit.Keys)
	require.Empty(t, config.Default().RTC.AnnounceAddresses)
}

func TestEmptyDocumentIsDefault(t *testing.T) {
	c, err := config.Parse(nil, "empty.toml")
	require.NoError(t, err)
	require.Equal(t, config.Default(), c)
	require.Nil(t, c.Matrix)
}

// The example must show every option with its default value, so loading it gives Default.
// Documented differences: none.
func TestExampleIsDefault(t *testing.T) {
	c, err := config.Load(examplePath)
	require.NoError(t, err)
	require.Equal(t, config.Default(), c)
}

// Every option of Config appears in the example, and every option line there has a comment
// right above it.
func TestExampleShowsEveryOption(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	require.NoError(t, err)
	var md toml.MetaData
	md, err = toml.Decode(string(data), config.Default())
	require.NoError(t, err)
	present := map[string]bool{}
	for _, k := range md.Keys() {
		present[k.String()] = true
	}
	for _, opt := range options(reflect.TypeFor[config.Config](), "") {
		require.True(t, present[opt], "config.example.toml lacks option %q", opt)
	}

	var prev string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "[") {
			require.True(t, strings.HasPrefix(prev, "#"), "line %d %q has no comment above it", n, line)
		}
		prev = line
	}
	require.Contains(t, string(data), "# [matrix]", "the [matrix] section stays commented out")
}

// options lists the dotted TOML names of every leaf option under t. The Matrix section is
// optional and documented in docs/matrix.md; LiveKit keys are a map.
func options(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		full := prefix + name
		switch {
		case f.Type.Kind() == reflect.Pointer:
			continue
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[config.Duration]():
			out = append(out, options(f.Type, full+".")...)
		default:
			out = append(out, full)
		}
	}
	return out
}

func TestTURNHost(t *testing.T) {
	c := config.Default()
	require.Equal(t, "127.0.0.1", c.TURNHost(), "the bind address")
	c.RTC.BindAddress = "0.0.0.0"
	require.Equal(t, "", c.TURNHost(), "no host to derive")
	c.RTC.AnnounceAddresses = []string{"203.0.113.7", "2001:db8::7"}
	require.Equal(t, "203.0.113.7", c.TURNHost(), "the first announced address")
	c.Server.PublicURL = "https://meet.example.org:8443/sub"
	require.Equal(t, "meet.example.org", c.TURNHost(), "public_url's host")
	c.TURN.Host = "turn.example.org"
	require.Equal(t, "turn.example.org", c.TURNHost(), "turn.host")
}

func TestParseOverridesDefaults(t *testing.T) {
	doc := `
data_dir = "/var/lib/entente"
[server]
listen = ":443"
public_url = "https://meet.example.org"
adaptive_processors = false
[log]
level = "debug"
format = "json"
[rtc]
udp_port = 50000
tcp_port = 0
bind_address = "0.0.0.0"
announce_addresses = ["203.0.113.7", "2001:db8::7"]
[turn]
enabled = true
udp_port = 0
tls_port = 5349
cert_file = "/etc/entente/turn.pem"
key_file = "/etc/entente/turn.key"
realm = "agency.example"
credential_lifetime = "10m"
[room]
auto_create = false
empty_timeout = "1m"
departure_timeout = "90s"
max_participants = 50
[livekit]
token_ttl = "1h"
[livekit.keys]
prod = "` + goodSecret + `"
[web]
enabled = false
guests = false
[matrix]
homeserver_url = "http://127.0.0.1:8008"
server_name = "agency.example"
registration = "/etc/entente/registration.yaml"
`
	c, err := config.Parse([]byte(doc), "t.toml")
	require.NoError(t, err)
	want := &config.Config{
		DataDir: "/var/lib/entente",
		Server:  config.Server{Listen: ":443", PublicURL: "https://meet.example.org", AdaptiveProcessors: false, TrustedProxies: []string{}},
		Log:     config.Log{Level: "debug", Format: "json"},
		RTC:     config.RTC{UDPPort: 50000, TCPPort: 0, BindAddress: "0.0.0.0", AnnounceAddresses: []string{"203.0.113.7", "2001:db8::7"}},
		TURN: config.TURN{
			Enabled: true, UDPPort: 0, TLSPort: 5349, CertFile: "/etc/entente/turn.pem", KeyFile: "/etc/entente/turn.key",
			Realm: "agency.example", CredentialLifetime: config.Duration{10 * time.Minute},
		},
		Room: config.Room{
			AutoCreate:       false,
			EmptyTimeout:     config.Duration{time.Minute},
			DepartureTimeout: config.Duration{90 * time.Second},
			MaxParticipants:  50,
			HistoryRetention: config.Duration{90 * 24 * time.Hour},
		},
		LiveKit: config.LiveKit{Keys: map[string]string{"prod": goodSecret}, TokenTTL: config.Duration{time.Hour}},
		Web:     config.Web{Guests: new(false), GuestRate: 10, GuestBurst: 10},
		Audit:   config.Audit{Retention: config.Duration{365 * 24 * time.Hour}},
		Matrix: &config.Matrix{
			HomeserverURL: "http://127.0.0.1:8008", ServerName: "agency.example",
			Registration: "/etc/entente/registration.yaml",
			ID:           "entente", BotLocalpart: "entente", GhostPrefix: "entente_",
			Allow: []string{}, AppserviceListen: "127.0.0.1:29335",
			RoomEvents: "all", UnknownMembership: "refuse",
		},
	}
	require.Equal(t, want, c)
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		modify func(c *config.Config)
		want   string // substring of the single problem; "" means valid
	}{
		{"default", func(*config.Config) {}, ""},
		{"empty data dir", func(c *config.Config) { c.DataDir = "" }, "data_dir"},
		{"listen without port", func(c *config.Config) { c.Server.Listen = "127.0.0.1" }, "server.listen"},
		{"listen bad port", func(c *config.Config) { c.Server.Listen = "127.0.0.1:http" }, "server.listen"},
		{"listen port too big", func(c *config.Config) { c.Server.Listen = "127.0.0.1:70000" }, "server.listen"},
		{"listen any host", func(c *config.Config) { c.Server.Listen = ":7880" }, ""},
		{"listen port 0", func(c *config.Config) { c.Server.Listen = "127.0.0.1:0" }, ""},
		{"listen ipv6", func(c *config.Config) { c.Server.Listen = "[::1]:7880" }, ""},
		{"public url https", func(c *config.Config) { c.Server.PublicURL = "https://meet.example.org/sub" }, ""},
		{"public url relative", func(c *config.Config) { c.Server.PublicURL = "/meet" }, "server.public_url"},
		{"public url no scheme", func(c *config.Config) { c.Server.PublicURL = "meet.example.org" }, "server.public_url"},
		{"public url ws", func(c *config.Config) { c.Server.PublicURL = "wss://meet.example.org" }, "server.public_url"},
		{"public url no host", func(c *config.Config) { c.Server.PublicURL = "https://" }, "server.public_url"},
		{"log level", func(c *config.Config) { c.Log.Level = "verbose" }, "log.level"},
		{"log level numeric", func(c *config.Config) { c.Log.Level = "0" }, "log.level"},
		{"log level trace", func(c *config.Config) { c.Log.Level = "trace" }, ""},
		{"log format", func(c *config.Config) { c.Log.Format = "text" }, "log.format"},
		{"udp port 0", func(c *config.Config) { c.RTC.UDPPort = 0 }, "rtc.udp_port"},
		{"udp port too big", func(c *config.Config) { c.RTC.UDPPort = 65536 }, "rtc.udp_port"},
		{"udp port max", func(c *config.Config) { c.RTC.UDPPort = 65535 }, ""},
		{"tcp port off", func(c *config.Config) { c.RTC.TCPPort = 0 }, ""},
		{"tcp port negative", func(c *config.Config) { c.RTC.TCPPort = -1 }, "rtc.tcp_port"},
		{"tcp port too big", func(c *config.Config) { c.RTC.TCPPort = 65536 }, "rtc.tcp_port"},
		{"turn on", func(c *config.Config) { c.TURN.Enabled = true }, ""},
		{"turn off ignores its options", func(c *config.Config) { c.TURN.UDPPort, c.TURN.Realm = -1, "" }, ""},
		{"turn no port", func(c *config.Config) { c.TURN.Enabled, c.TURN.UDPPort, c.TURN.TLSPort = true, 0, 0 }, "both 0"},
		{"turn udp only", func(c *config.Config) { c.TURN.Enabled, c.TURN.TLSPort = true, 0 }, ""},
		{"turn tls port too big", func(c *config.Config) { c.TURN.Enabled, c.TURN.TLSPort = true, 70000 }, "turn.tls_port"},
		{"turn udp port is media's", func(c *config.Config) { c.TURN.Enabled, c.TURN.UDPPort = true, 7882 }, "turn.udp_port 7882 is rtc.udp_port"},
		{"turn tls port is ice-tcp's", func(c *config.Config) { c.TURN.Enabled, c.TURN.TLSPort = true, 7882 }, "turn.tls_port 7882 is rtc.tcp_port"},
		{"turn tls port is http's", func(c *config.Config) { c.TURN.Enabled, c.TURN.TLSPort = true, 7880 }, "server.listen"},
		{"turn cert without key", func(c *config.Config) { c.TURN.Enabled, c.TURN.CertFile = true, "/etc/ssl/turn.pem" }, "go together"},
		{"turn cert and key", func(c *config.Config) {
			c.TURN.Enabled, c.TURN.CertFile, c.TURN.KeyFile = true, "/etc/ssl/turn.pem", "/etc/ssl/turn.key"
		}, ""},
		{"turn host name", func(c *config.Config) { c.TURN.Enabled, c.TURN.Host = true, "turn.agency.example" }, ""},
		{"turn host ipv6", func(c *config.Config) { c.TURN.Enabled, c.TURN.Host = true, "2001:db8::7" }, ""},
		{"turn host with port", func(c *config.Config) { c.TURN.Enabled, c.TURN.Host = true, "turn.agency.example:443" }, "turn.host"},
		{"turn host url", func(c *config.Config) { c.TURN.Enabled, c.TURN.Host = true, "turns://turn.agency.example" }, "turn.host"},
		{"turn host space", func(c *config.Config) { c.TURN.Enabled, c.TURN.Host = true, "turn agency" }, "turn.host"},
		{"turn empty realm", func(c *config.Config) { c.TURN.Enabled, c.TURN.Realm = true, "" }, "turn.realm"},
		{"turn lifetime zero", func(c *config.Config) { c.TURN.Enabled, c.TURN.CredentialLifetime = true, config.Duration{} }, "turn.credential_lifetime"},
		{"turn lifetime too long", func(c *config.Config) {
			c.TURN.Enabled, c.TURN.CredentialLifetime = true, config.Duration{30 * 24 * time.Hour}
		}, "turn.credential_lifetime"},
		{"turn bind any, no announce", func(c *config.Config) {
			c.TURN.Enabled, c.RTC.BindAddress, c.TURN.Host = true, "0.0.0.0", "turn.example.org"
		}, "needs rtc.announce_addresses"},
		{"turn host, bind any, announced", func(c *config.Config) {
			c.TURN.Enabled, c.RTC.BindAddress, c.RTC.AnnounceAddresses, c.TURN.Host = true, "0.0.0.0", []string{"203.0.113.7"}, "turn.example.org"
		}, ""},
		{"bind hostname", func(c *config.Config) { c.RTC.BindAddress = "localhost" }, "rtc.bind_address"},
		{"bind empty", func(c *config.Config) { c.RTC.BindAddress = "" }, "rtc.bind_address"},
		{"bind ipv6", func(c *config.Config) { c.RTC.BindAddress = "::" }, ""},
		{"announce hostname", func(c *config.Config) { c.RTC.AnnounceAddresses = []string{"10.0.0.1", "example.org"} }, "rtc.announce_addresses[1]"},
		{"announce unspecified", func(c *config.Config) { c.RTC.AnnounceAddresses = []string{"0.0.0.0"} }, "rtc.announce_addresses[0]"},
		{"empty timeout zero", func(c *config.Config) { c.Room.EmptyTimeout = config.Duration{} }, "room.empty_timeout"},
		{"departure timeout negative", func(c *config.Config) { c.Room.DepartureTimeout = config.Duration{-time.Second} }, "room.departure_timeout"},
		{"token ttl zero", func(c *config.Config) { c.LiveKit.TokenTTL = config.Duration{} }, "livekit.token_ttl"},
		{"max participants negative", func(c *config.Config) { c.Room.MaxParticipants = -1 }, "room.max_participants"},
		{"good key", func(c *config.Config) { c.LiveKit.Keys["prod"] = goodSecret }, ""},
		{"empty key name", func(c *config.Config) { c.LiveKit.Keys[""] = goodSecret }, "key name is empty"},
		{"short secret", func(c *config.Config) { c.LiveKit.Keys["prod"] = goodSecret[:31] }, "31 characters"},
		{"placeholder key name", func(c *config.Config) { c.LiveKit.Keys["<key>"] = goodSecret }, "placeholder"},
		{"placeholder secret", func(c *config.Config) { c.LiveKit.Keys["prod"] = "CHANGE_ME_CHANGE_ME_CHANGE_ME_CHANGE_ME" }, "placeholder"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			tc.modify(c)
			err := c.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, config.ErrInvalid)
			var ve *config.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Len(t, ve.Problems, 1, "problems: %q", ve.Problems)
			require.Contains(t, ve.Problems[0], tc.want)
		})
	}
}

func TestPlaceholderSecrets(t *testing.T) {
	cases := []struct {
		secret      string
		placeholder bool
	}{
		{"CHANGE_ME", true},
		{"changeme", true},
		{"change-me-to-something-longer-than-32", true},
		{"secret", true},
		{"SECRET", true},
		{"<your secret>", true},
		{"<at least 32 random characters>", true},
		{"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", true},
		{"XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX", true},
		{"00000000000000000000000000000000", true},
		{"your-secret", true},
		{"your_secret_here_with_enough_length_ok", true},
		{"replace-me-replace-me-replace-me-replace", true},
		{"...", true},
		{goodSecret, false},
		{"dGhpcyBpcyBhIHJlYWwgcmFuZG9tIHNlY3JldCE=", false},
	}
	for _, tc := range cases {
		t.Run(tc.secret, func(t *testing.T) {
			c := config.Default()
			c.LiveKit.Keys["prod"] = tc.secret
			err := c.Validate()
			if !tc.placeholder {
				require.NoError(t, err)
				return
			}
			var ve *config.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Len(t, ve.Problems, 1)
			require.Contains(t, ve.Problems[0], "placeholder")
		})
	}
}

func TestValidateReportsEverythingAtOnce(t *testing.T) {
	c := config.Default()
	c.Server.Listen = "nope"
	c.Log.Level = "loud"
	c.Log.Format = "xml"
	c.RTC.UDPPort = -1
	c.Room.EmptyTimeout = config.Duration{}
	c.LiveKit.Keys["a"] = "short"
	c.LiveKit.Keys["b"] = "changeme"

	var ve *config.ValidationError
	require.ErrorAs(t, c.Validate(), &ve)
	require.Len(t, ve.Problems, 7)
	for _, name := range []string{"server.listen", "log.level", "log.format", "rtc.udp_port", "room.empty_timeout", "livekit.keys.a", "livekit.keys.b"} {
		require.True(t, containsProblem(ve.Problems, name), "no problem names %s in %q", name, ve.Problems)
	}
}

func containsProblem(problems []string, name string) bool {
	for _, p := range problems {
		if strings.HasPrefix(p, name) {
			return true
		}
	}
	return false
}

func TestUnknownKeyNamesKeyAndLine(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		key  string
		line int
	}{
		{"top level", "data_dir = \"x\"\ndatadir = \"y\"\n", "datadir", 2},
		{"in section", "[server]\nlisten = \"127.0.0.1:1\"\n\nlisen = \":2\"\n", "server.lisen", 4},
		{"unknown section", "[log]\nlevel = \"info\"\n[telemetry]\nport = 9000\n", "telemetry", 3},
		{"dotted key", "rtc.udp_portt = 1\n", "rtc.udp_portt", 1},
		{"inline table", "room = { auto_create = true, max = 3 }\n", "room.max", 1},
		{"wrong case section", "\n[Server]\nlisten = \":1\"\n", "Server", 2},
		{"wrong case key", "[web]\nEnabled = false\n", "web.Enabled", 2},
		{"in matrix", "[matrix]\nhomeserver = \"x\"\n", "matrix.homeserver", 2},
		{"quoted key", "[web]\n\"gue sts\" = true\n", `web."gue sts"`, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.doc), "node.toml")
			require.ErrorIs(t, err, config.ErrUnknownKey)
			var uk *config.UnknownKeyError
			require.ErrorAs(t, err, &uk)
			require.Equal(t, tc.key, uk.Key)
			require.Equal(t, tc.line, uk.Line)
			require.Equal(t, "node.toml", uk.File)
			require.Contains(t, err.Error(), "node.toml:")
			require.Contains(t, err.Error(), tc.key)
		})
	}
}

func TestParseReportsUnknownKeysAndProblemsTogether(t *testing.T) {
	doc := `
[server]
listen = "nope"
lisen = ":1"
[rtc]
udp_port = 0
[extra]
x = 1
`
	_, err := config.Parse([]byte(doc), "node.toml")
	require.ErrorIs(t, err, config.ErrUnknownKey)
	require.ErrorIs(t, err, config.ErrInvalid)
	var keys []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if uk := (*config.UnknownKeyError)(nil); errors.As(e, &uk) {
			keys = append(keys, uk.Key)
		}
	}
	require.Equal(t, []string{"server.lisen", "extra"}, keys)
	var ve *config.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Len(t, ve.Problems, 2)
	msg := err.Error()
	for _, want := range []string{"node.toml:4: unknown key server.lisen", "node.toml:7: unknown key extra", "server.listen", "rtc.udp_port"} {
		require.Contains(t, msg, want)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"syntax", "[server\n", "node.toml"},
		{"bad duration", "[room]\nempty_timeout = \"5 minutes\"\n", "empty_timeout"},
		{"duration without unit", "[room]\nempty_timeout = 5\n", "empty_timeout"},
		{"wrong type", "[rtc]\nudp_port = \"7882\"\n", "udp_port"},
		{"keys not strings", "[livekit.keys]\na = 1\n", "livekit.keys.a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tc.doc), "node.toml")
			require.Nil(t, c)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.toml"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestDurationText(t *testing.T) {
	var d config.Duration
	require.NoError(t, d.UnmarshalText([]byte("1m30s")))
	require.Equal(t, 90*time.Second, d.Duration)
	b, err := d.MarshalText()
	require.NoError(t, err)
	require.Equal(t, "1m30s", string(b))
	require.Error(t, d.UnmarshalText([]byte("soon")))

	require.NoError(t, d.UnmarshalText([]byte("90d")))
	require.Equal(t, 90*24*time.Hour, d.Duration)
	require.NoError(t, d.UnmarshalText([]byte("0d")))
	require.Zero(t, d.Duration)
	for _, bad := range []string{"d", "1.5d", "-1d", "100001d", "9999999999999999999d", "1h2d"} {
		require.Error(t, d.UnmarshalText([]byte(bad)), bad)
	}
}

func TestAuditRetention(t *testing.T) {
	c, err := config.Parse([]byte("[audit]\nretention = \"90d\"\n"), "t.toml")
	require.NoError(t, err)
	require.Equal(t, 90*24*time.Hour, c.Audit.Retention.Duration)
	c, err = config.Parse([]byte("[audit]\nretention = \"0\"\n"), "t.toml")
	require.NoError(t, err)
	require.Zero(t, c.Audit.Retention.Duration, "0 keeps the audit log forever")
	_, err = config.Parse([]byte("[audit]\nretention = \"a year\"\n"), "t.toml")
	require.ErrorContains(t, err, "audit.retention")
	_, err = config.Parse([]byte("[audit]\nretention = \"-5d\"\n"), "t.toml")
	require.ErrorContains(t, err, "audit.retention")
	_, err = config.Parse([]byte("[audit]\nretention = \"-1h\"\n"), "t.toml")
	require.ErrorContains(t, err, "audit.retention")
}

func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	require.NoError(f, err)
	f.Add(example)
	f.Add([]byte(""))
	f.Add([]byte("[server]\nlisen = 1\n[matrix]\nx.y.z = 2\n"))
	f.Add([]byte("a.b.c.d = 1\n[[rtc]]\nx = 1\n"))
	f.Add([]byte("\"\" = 1\n[\"a,b\"]\n\"-\" = 2\n[livekit.keys]\nk = \"<x>\"\n"))
	f.Add([]byte("room = { empty_timeout = \"-1s\", Auto_Create = true }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data, "fuzz.toml")
		if err == nil {
			require.NotNil(t, c)
			require.NoError(t, c.Validate())
		} else {
			require.Nil(t, c)
		}
	})
}

func TestPprofListenMustBeLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:6060", true},
		{"localhost:6060", true},
		{"[::1]:6060", true},
		{"0.0.0.0:6060", false},
		{"192.0.2.1:6060", false},
		{"6060", false},
	} {
		c := config.Default()
		c.Debug.PprofListen = tc.listen
		err := c.Validate()
		if tc.ok {
			require.NoError(t, err, tc.listen)
		} else {
			require.Error(t, err, tc.listen)
			require.ErrorContains(t, err, "debug.pprof_listen")
		}
	}
}

// web.guests left unset follows server.listen: on for loopback only. Set, it wins.
func TestGuestsDefaultFollowsListen(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want bool
	}{
		{``, true}, // the built-in default listens on 127.0.0.1: `make run`
		{`[server]
listen = "localhost:7880"`, true},
		{`[server]
listen = "127.0.0.2:7880"`, true},
		{`[server]
listen = "[::1]:7880"`, true},
		{`[server]
listen = "0.0.0.0:7880"`, false},
		{`[server]
listen = ":7880"`, false},
		{`[server]
listen = "192.0.2.10:7880"`, false},
		{`[server]
listen = "meet.example.org:7880"`, false},
		{`[server]
listen = "0.0.0.0:7880"
[web]
guests = true`, true},
		{`[web]
guests = false`, false},
	} {
		t.Run(tc.doc, func(t *testing.T) {
			c, err := config.Parse([]byte(tc.doc), "t.toml")
			require.NoError(t, err)
			require.Equal(t, tc.want, c.GuestsAllowed())
		})
	}
}

func TestLimitOptions(t *testing.T) {
	d := config.Default()
	require.Equal(t, 100, d.Room.MaxParticipants, "rooms are capped by default")
	require.Equal(t, 90*24*time.Hour, d.Room.HistoryRetention.Duration)
	require.Equal(t, 365*24*time.Hour, d.Audit.Retention.Duration, "the audit log is kept a year by default")
	require.Equal(t, 10.0, d.Web.GuestRate)
	require.Equal(t, 10, d.Web.GuestBurst)
	require.Empty(t, d.Server.TrustedProxies)

	for _, tc := range []struct {
		name    string
		edit    func(*config.Config)
		problem string
	}{
		{"keep history forever", func(c *config.Config) { c.Room.HistoryRetention.Duration = 0 }, ""},
		{"negative retention", func(c *config.Config) { c.Room.HistoryRetention.Duration = -time.Hour }, "room.history_retention"},
		{"keep the audit log forever", func(c *config.Config) { c.Audit.Retention.Duration = 0 }, ""},
		{"negative audit retention", func(c *config.Config) { c.Audit.Retention.Duration = -time.Hour }, "audit.retention"},
		{"no guest limit", func(c *config.Config) { c.Web.GuestRate, c.Web.GuestBurst = 0, 0 }, ""},
		{"negative guest rate", func(c *config.Config) { c.Web.GuestRate = -1 }, "web.guest_rate"},
		{"rate without burst", func(c *config.Config) { c.Web.GuestBurst = 0 }, "web.guest_burst"},
		{"trusted proxies", func(c *config.Config) { c.Server.TrustedProxies = []string{"127.0.0.1", "10.0.0.0/8", "::1"} }, ""},
		{"trusted proxy hostname", func(c *config.Config) { c.Server.TrustedProxies = []string{"10.0.0.1", "proxy.lan"} }, "server.trusted_proxies[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			tc.edit(c)
			err := c.Validate()
			if tc.problem == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.problem)
		})
	}
}
