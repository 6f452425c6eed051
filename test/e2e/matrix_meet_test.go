package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/dendritetest"
)

// meetLink sends "!meet" to the room as u and returns the link in the
// bot's answer, read back from the room with the client-server API.
func meetLink(t *testing.T, m *matrixNode, u dendritetest.User, roomID string) string {
	t.Helper()
	hs := m.hs
	hs.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/meet-"+u.DeviceID, u.Token,
		map[string]any{"msgtype": "m.text", "body": "!meet"}, nil)
	var link string
	require.Eventually(t, func() bool {
		var msgs struct {
			Chunk []struct {
				Sender  string         `json:"sender"`
				Content map[string]any `json:"content"`
			} `json:"chunk"`
		}
		hs.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=20", u.Token, nil, &msgs)
		for _, msg := range msgs.Chunk {
			body, _ := msg.Content["body"].(string)
			if msg.Sender != m.bot || !strings.Contains(body, "http") {
				continue
			}
			link = body[strings.LastIndexByte(body, ' ')+1:]
			return true
		}
		return false
	}, 15*time.Second, 100*time.Millisecond, "the bot answers !meet with a link")
	return link
}

// TestBrowserMatrixMeet: a "!meet" link opened in a browser. Bob joins the
// room's call the Element way (matrix-js-sdk page, /get_token); the link
// the bot posted for "!meet" is opened on the node's join page twice:
// Carol signs in there with her Matrix password through the page's own
// form, and a guest without an account joins by name (matrix.meeting_guests
// = true). All three must land in the same LiveKit room and decode each
// other's video.
func TestBrowserMatrixMeet(t *testing.T) {
	env := findBrowserEnv(t, true)
	page := serveMatrixPage(t, env)
	m := startMatrixNode(t, matrixNodeOptions{extraMatrix: "meeting_guests = true"})
	hs := m.hs
	alice, bob, carol := hs.Register(t, "alice"), hs.Register(t, "bob"), hs.Register(t, "carol")
	const alias = "e2e-meet"
	roomID := hs.CreateRoom(t, alice, map[string]any{
		"preset": "private_chat", "room_alias_name": alias, "invite": []string{m.bot, bob.ID, carol.ID},
		"power_level_content_override": map[string]any{"events": map[string]any{"org.matrix.msc3401.call.member": 0}},
	})
	hs.Join(t, carol, roomID)
	require.Eventually(t, func() bool { return hs.IsJoined(t, alice, roomID, m.bot) }, 15*time.Second, 50*time.Millisecond,
		"the bot accepts the invitation")

	link := meetLink(t, m, alice, roomID)
	t.Logf("!meet link: %s", link)
	u, err := url.Parse(link)
	require.NoError(t, err)
	require.Equal(t, roomID, u.Query().Get(matrix.QueryMatrixRoom))
	require.True(t, strings.HasPrefix(link, m.HTTPURL+"/"), "the link opens this node's join page")

	bobURL := page + "?" + url.Values{
		"hs": {hs.ClientURL}, "node": {m.HTTPURL}, "user": {localpart(bob.ID)}, "password": {bob.Password},
		"role": {"join"}, "alias": {alias}, "server": {hs.ServerName}, "bot": {m.bot},
	}.Encode()
	res := runBrowser(t, env, []browserPage{
		{Label: "bob-element", Kind: "client", URL: bobURL},
		{Label: "carol-signin", Kind: "joinpage", URL: link,
			Fill: map[string]string{"#mx-user": localpart(carol.ID), "#mx-password": carol.Password}, Click: "#mx-signin"},
		{Label: "guest", Kind: "joinpage", URL: link, Fill: map[string]string{"#guest-name": "Gwen Guest"}, Click: "#guest-join"},
	})
	pages := checkPages(t, res)
	require.Len(t, pages, 3)
	for _, l := range []string{"carol-signin", "guest"} {
		p := pages[l]
		t.Logf("page %s: link opened -> first decoded frame %s ms (form submitted at %s ms, joined at %s ms)",
			l, ms(p.T, "firstDecodedFrame"), ms(p.T, "joinClicked"), ms(p.T, "joined"))
	}
	require.True(t, strings.HasPrefix(pages["guest"].Identity, matrix.GuestIdentityPrefix), pages["guest"].Identity)

	// Bob and Carol are in the call as Matrix members: the node saw both
	// call memberships, and each page joined with the identity
	// lk-jwt-service derives from user, device and member ID.
	db := storeDB(t, m.DataDir)
	rows, err := db.Query(`SELECT user_id, device_id FROM matrix_call_members WHERE room_id = ? ORDER BY user_id`, roomID)
	require.NoError(t, err)
	defer rows.Close()
	var users []string
	for rows.Next() {
		var userID, deviceID string
		require.NoError(t, rows.Scan(&userID, &deviceID))
		users = append(users, userID)
		want := matrix.Identity(userID, deviceID, userID+":"+deviceID)
		require.True(t, slices.ContainsFunc(res.Pages, func(p pageResult) bool { return p.Identity == want }),
			"a page joined the SFU as %s's identity %s", userID, want)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{bob.ID, carol.ID}, users, "Carol signed in on the join page is a call member like Bob")
}

// TestMatrixMeetGuestsRefused: with matrix.meeting_guests at its default
// (false) the join page learns that guests may not join, and the guest
// endpoint refuses them with 403 M_FORBIDDEN.
func TestMatrixMeetGuestsRefused(t *testing.T) {
	m := startMatrixNode(t, matrixNodeOptions{withoutDendrite: true})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.HTTPURL+matrix.PathMeetingInfo, nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var info map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&info))
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, false, info["guests"])
	require.NotEmpty(t, info["homeserver_url"])

	req, err = http.NewRequestWithContext(ctx, http.MethodPost, m.HTTPURL+matrix.PathMeetingGuest,
		strings.NewReader(`{"room_id":"!call:127.0.0.1:1","name":"Gwen"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	var e map[string]string
	require.NoError(t, json.NewDecoder(res.Body).Decode(&e))
	res.Body.Close()
	require.Equal(t, http.StatusForbidden, res.StatusCode)
	require.Equal(t, "M_FORBIDDEN", e["errcode"])
}
