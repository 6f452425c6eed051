package main

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/bridge/matrix"
	lk "entente.dev/entente/media/livekit"
)

type recordingAdmitter struct{ calls int }

func (r *recordingAdmitter) Admit(context.Context, map[string]string) error {
	r.calls++
	return nil
}

func TestAdmissionKeepsJoinPageGuestsOutOfMatrixCalls(t *testing.T) {
	callRoom := matrix.RoomAlias("!room:agency.example", "m.call#ROOM")
	guest := map[string]string{attrWebGuest: "1"}
	for _, tc := range []struct {
		name    string
		grant   lk.Grant
		refused bool
	}{
		{"web guest, Matrix call room", lk.Grant{Room: callRoom, Attributes: guest}, true},
		{"web guest, named meeting room", lk.Grant{Room: matrix.MeetRoom("!room:agency.example", "standup"), Attributes: guest}, true},
		{"web guest, ordinary room", lk.Grant{Room: "team-sync", Attributes: guest}, false},
		{"bridge token, Matrix call room", lk.Grant{Room: callRoom, Attributes: map[string]string{matrix.AttrMatrixRoomID: "x"}}, false},
		{"meeting guest (bridge), Matrix call room", lk.Grant{Room: callRoom}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingAdmitter{}
			err := matrixAdmitter{bridge: rec}.Admit(context.Background(), &tc.grant)
			if tc.refused {
				require.True(t, errors.Is(err, lk.ErrNotAdmitted), "%v", err)
				require.Zero(t, rec.calls)
			} else {
				require.NoError(t, err)
				require.Equal(t, 1, rec.calls, "the bridge re-checks what it issued")
			}
		})
	}
}

func TestWebGuestTokensAreMarked(t *testing.T) {
	keys := lk.Keys{"k": "0123456789abcdefghijklmnopqrstuvwxyz"}
	tok, err := webGuestMinter{lk.Minter{Key: "k", Secret: keys["k"], TTL: 3600e9}}.MintJoinToken("demo", "guest-1", "Ann")
	require.NoError(t, err)
	g, err := lk.Verify(keys, tok)
	require.NoError(t, err)
	require.Equal(t, "1", g.Attributes[attrWebGuest])
	require.True(t, g.RoomCreate && g.CanPublish && g.CanSubscribe && g.CanPublishData)
}

// A join-page guest token is refused once the node no longer lets guests
// in; other tokens, and guest tokens while guests are allowed, go on to
// the next admitter.
func TestAdmissionRefusesGuestTokensWhenGuestsOff(t *testing.T) {
	guest := lk.Grant{Room: "team-sync", Attributes: map[string]string{attrWebGuest: "1"}}
	other := lk.Grant{Room: "team-sync"}
	for _, tc := range []struct {
		name      string
		webGuests bool
		grant     lk.Grant
		refused   bool
	}{
		{"guest, guests on", true, guest, false},
		{"guest, guests off", false, guest, true},
		{"token holder, guests off", false, other, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, next := range []*recordingAdmitter{nil, {}} {
				a := guestAdmitter{webGuests: tc.webGuests}
				if next != nil {
					a.next = matrixAdmitter{bridge: next}
				}
				err := a.Admit(context.Background(), &tc.grant)
				if tc.refused {
					require.ErrorIs(t, err, lk.ErrNotAdmitted)
					if next != nil {
						require.Zero(t, next.calls)
					}
					continue
				}
				require.NoError(t, err)
				if next != nil {
					require.Equal(t, 1, next.calls)
				}
			}
		})
	}
}
