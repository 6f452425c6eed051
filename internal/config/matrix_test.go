package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/config"
)

const matrixMinimal = `
[matrix]
homeserver_url = "https://matrix.agency.example"
server_name = "agency.example"
registration = "registration.yaml"
`

func TestMatrixDefaults(t *testing.T) {
	c, err := config.Parse([]byte(matrixMinimal), "t.toml")
	require.NoError(t, err)
	want := config.MatrixDefaults()
	want.HomeserverURL, want.ServerName, want.Registration = "https://matrix.agency.example", "agency.example", "registration.yaml"
	require.Equal(t, &want, c.Matrix)
}

func TestMatrixFull(t *testing.T) {
	tok := strings.Repeat("a1", 20)
	doc := `
[matrix]
homeserver_url = "http://127.0.0.1:8008"
server_name = "127.0.0.1:8448"
as_token = "` + tok + `"
hs_token = "` + tok + `b"
id = "node"
bot_localpart = "rtc"
ghost_prefix = "rtc_"
allow = ["partner.example", "[::1]:8448", "*"]
token_service_url = "https://rtc.agency.example/"
appservice_listen = "127.0.0.1:9000"
appservice_url = "http://10.0.0.5:9000"
insecure_skip_verify = true
homeserver_public_url = "https://matrix.agency.example"
meeting_guests = true
room_events = "bot_rooms"
unknown_membership = "serve_local"
`
	c, err := config.Parse([]byte(doc), "t.toml")
	require.NoError(t, err)
	require.Equal(t, &config.Matrix{
		HomeserverURL: "http://127.0.0.1:8008", ServerName: "127.0.0.1:8448", ASToken: tok, HSToken: tok + "b",
		ID: "node", BotLocalpart: "rtc", GhostPrefix: "rtc_", Allow: []string{"partner.example", "[::1]:8448", "*"},
		TokenServiceURL: "https://rtc.agency.example/", AppserviceListen: "127.0.0.1:9000",
		AppserviceURL: "http://10.0.0.5:9000", InsecureSkipVerify: true,
		HomeserverPublicURL: "https://matrix.agency.example", MeetingGuests: true,
		RoomEvents: "bot_rooms", UnknownMembership: "serve_local",
	}, c.Matrix)
	require.Equal(t, "https://matrix.agency.example", c.Matrix.PublicHomeserverURL())
	c.Matrix.HomeserverPublicURL = ""
	require.Equal(t, "http://127.0.0.1:8008", c.Matrix.PublicHomeserverURL(), "defaults to homeserver_url")
}

func TestMatrixValidation(t *testing.T) {
	doc := `
[matrix]
homeserver_url = "matrix.agency.example"
server_name = "https://agency.example/"
as_token = "CHANGE_ME"
hs_token = "short"
id = ""
bot_localpart = "Bot"
ghost_prefix = "x y"
allow = ["ok.example", "user@evil.example", "a.example/path"]
token_service_url = "ftp://x"
appservice_listen = "nope"
appservice_url = "x"
homeserver_public_url = "matrix.agency.example"
room_events = "some"
unknown_membership = "allow"
`
	_, err := config.Parse([]byte(doc), "t.toml")
	var ve *config.ValidationError
	require.True(t, errors.As(err, &ve), "%v", err)
	for _, want := range []string{
		"matrix.homeserver_url", "matrix.server_name", "matrix.as_token is a placeholder", "matrix.hs_token has 5",
		"matrix.bot_localpart", "matrix.ghost_prefix", "matrix.allow[1]", "matrix.allow[2]",
		"matrix.token_service_url", "matrix.appservice_listen", "matrix.appservice_url", "matrix.homeserver_public_url",
		`matrix.room_events "some"`, `matrix.unknown_membership "allow"`,
	} {
		require.Contains(t, err.Error(), want)
	}
	require.NotContains(t, err.Error(), "allow[0]")
	require.NotContains(t, err.Error(), "matrix.registration", "tokens given: no registration needed")

	_, err = config.Parse([]byte("[matrix]\n"), "t.toml")
	require.ErrorContains(t, err, "matrix.homeserver_url is required")
	require.ErrorContains(t, err, "matrix.server_name is required")
	require.ErrorContains(t, err, "matrix.registration is required")

	_, err = config.Parse([]byte(matrixMinimal+"bot_localpart = \"entente_bot\"\n"), "t.toml")
	require.ErrorContains(t, err, "must not start with matrix.ghost_prefix")

	c, err := config.Parse([]byte(matrixMinimal), "t.toml")
	require.NoError(t, err)
	require.False(t, c.Matrix.MeetingGuests, "guests of !meet calls are off by default")
	require.Equal(t, config.RoomEventsAll, c.Matrix.RoomEvents, "the node follows every room by default")
	require.Equal(t, config.UnknownMembershipRefuse, c.Matrix.UnknownMembership, "unknown membership is refused by default")
	_, err = config.Parse([]byte("[web]\nenabled = false\n"+matrixMinimal+"meeting_guests = true\n"), "t.toml")
	require.ErrorContains(t, err, "matrix.meeting_guests needs web.enabled")
}
