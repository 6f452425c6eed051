package e2e

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/dendritetest"
)

// TestFederationThreeAgencies: three agencies, every node listing the
// other two. One person of each, in one room of A's, each connected to
// their own node only, receives the other two's audio and video. Each
// node holds two trunks, one per other node, and each trunk brings only
// its peer's own person: nobody reaches a node through a third one (no
// transit) or comes back to their own (no echo).
func TestFederationThreeAgencies(t *testing.T) {
	hss := []*dendritetest.Homeserver{dendritetest.New(t), dendritetest.New(t), dendritetest.New(t)}
	dbgs := make([]string, 3)
	nodes := make([]*matrixNode, 3)
	for i, hs := range hss {
		dbgs[i] = fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp"))
		toml := fmt.Sprintf("\n[debug]\npprof_listen = %q\n", dbgs[i])
		for j, peer := range hss {
			if j != i {
				toml += fmt.Sprintf("\n[federation.peers.%q]\nbot = %q\n", peer.ServerName, "@entente:"+peer.ServerName)
			}
		}
		nodes[i] = startMatrixNode(t, matrixNodeOptions{homeserver: hs, extraMatrix: `allow = ["*"]`, extraTOML: toml})
	}
	users := []dendritetest.User{nodes[0].hs.Register(t, "alice"), nodes[1].hs.Register(t, "bob"), nodes[2].hs.Register(t, "carol")}
	f := &federatedAgencies{a: nodes[0], b: nodes[1]}
	f.roomID = nodes[0].hs.CreateRoom(t, users[0], map[string]any{
		"preset": "public_chat", "name": "Three agencies",
		"power_level_content_override": map[string]any{"events": map[string]any{"org.matrix.msc3401.call.member": 0}},
	})
	for i := 1; i < 3; i++ {
		nodes[i].hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(f.roomID)+"?server_name="+url.QueryEscape(hss[0].ServerName),
			users[i].Token, map[string]any{}, nil)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	ids := make([]string, 3)
	clients := make([]*sdkClient, 3)
	for i, m := range nodes {
		tok := f.joinCall(t, m, users[i])
		ids[i] = users[i].ID + ":" + users[i].DeviceID
		clients[i] = connectClientWithToken(t, ctx, tok.URL, tok.JWT, ids[i])
		clients[i].publish(t, ctx, &wg)
	}
	for i, c := range clients {
		for j := range clients {
			if i == j {
				continue
			}
			for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
				eventually(t, 60*time.Second, fmt.Sprintf("%s receives %s's %s", ids[i], ids[j], k), func() bool {
					return c.count(key(ids[j], k)) > 20
				})
			}
		}
	}
	for i, dbg := range dbgs {
		tr := trunks(t, dbg)
		require.Len(t, tr, 2, "node %d holds one trunk per other node", i)
		for _, x := range tr {
			require.True(t, x.Up)
			require.Equal(t, 1, x.Remotes, "node %d: the trunk with %s brings that node's own person only", i, x.Peer)
		}
		var remotes []string
		for _, c := range connections(t, dbg) {
			if c.Origin != "" {
				remotes = append(remotes, c.Identity+"@"+c.Origin)
				require.NotContains(t, c.Identity, ":"+hss[i].ServerName+":", "nobody of node %d's own server comes back as remote", i)
			}
		}
		require.Len(t, remotes, 2, "node %d: exactly the two others, once each: %v", i, remotes)
	}
}
