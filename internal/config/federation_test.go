package config_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/config"
)

func TestFederation(t *testing.T) {
	doc := matrixMinimal + `
[federation.peers."partner.example"]
bot = "@entente:partner.example"

[federation.peers."127.0.0.1:8448"]
bot = "@rtc:127.0.0.1:8448"
device = "NODE2"
url = "https://rtc.partner.example"
`
	c, err := config.Parse([]byte(doc), "t.toml")
	require.NoError(t, err)
	require.Equal(t, &config.Federation{Peers: map[string]config.FederationPeer{
		"partner.example": {Bot: "@entente:partner.example"},
		"127.0.0.1:8448":  {Bot: "@rtc:127.0.0.1:8448", Device: "NODE2", URL: "https://rtc.partner.example"},
	}}, c.Federation)

	c, err = config.Parse([]byte(matrixMinimal), "t.toml")
	require.NoError(t, err)
	require.Nil(t, c.Federation, "absent: no federation")
}

func TestFederationValidation(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{`
[federation.peers."b.example"]
bot = "@entente:b.example"
`, "[federation] needs [matrix]"},
		{matrixMinimal + `
[federation.peers."agency.example"]
bot = "@entente:agency.example"
`, "this node's own server"},
		{matrixMinimal + `
[federation.peers."b.example"]
bot = "@entente:c.example"
`, "want a user of that server"},
		{matrixMinimal + `
[federation.peers."https://b.example/"]
bot = "@entente:b.example"
`, "not a Matrix server name"},
		{matrixMinimal + `
[federation.peers."b.example"]
bot = "@Entente:b.example"
`, "want a user of that server"},
		{matrixMinimal + `
[federation.peers."b.example"]
bot = "@entente:b.example"
device = "A B"
`, "not a device ID"},
		{matrixMinimal + `
[federation.peers."b.example"]
bot = "@entente:b.example"
url = "wss://rtc.b.example"
`, "federation.peers.\"b.example\".url \"wss://rtc.b.example\" is not an absolute http(s) URL"},
	} {
		_, err := config.Parse([]byte(c.doc), "t.toml")
		require.Error(t, err, c.doc)
		require.True(t, strings.Contains(err.Error(), c.want), "%q lacks %q", err, c.want)
	}
}
