package rtc

import (
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/media"
)

// fieldValues returns, for each field number in want, the values of every
// occurrence of it in the wire-format message b, with its wire type: what
// any decoder, not only Go's, could read as that field.
func fieldValues(t *testing.T, b []byte, want ...protowire.Number) map[protowire.Number][]string {
	t.Helper()
	out := map[protowire.Number][]string{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		require.GreaterOrEqual(t, n, 0, "relayed packet is not wire format")
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		require.GreaterOrEqual(t, m, 0, "relayed packet is not wire format")
		for _, w := range want {
			if num != w {
				continue
			}
			v := "wire type " + string(rune('0'+typ))
			if typ == protowire.BytesType {
				s, _ := protowire.ConsumeBytes(b)
				v = string(s)
			}
			out[num] = append(out[num], v)
		}
		b = b[m:]
	}
	return out
}

func dataPacket(t testing.TB, pkt *livekit.DataPacket) []byte {
	t.Helper()
	b, err := proto.Marshal(pkt)
	require.NoError(t, err)
	return b
}

// FuzzRelayedData feeds arbitrary data channel messages to what the room
// relays. Whatever the input, what goes out names the sender and only the
// sender: its identity and sid, once, in the packet and in a user payload,
// as any decoder reads them; nothing the node cannot read is passed on;
// messages about other participants (transcriptions by a non-agent,
// speaker updates, metrics) are not relayed; and the size stays bounded.
func FuzzRelayedData(f *testing.F) {
	topic := "chat"
	for _, pkt := range []*livekit.DataPacket{
		// livekit-client's publishData and sendChatMessage.
		{Kind: livekit.DataPacket_RELIABLE, Value: &livekit.DataPacket_User{User: &livekit.UserPacket{
			Payload: []byte(`{"message":"hello"}`), Topic: &topic, DestinationIdentities: []string{"bob"},
		}}},
		{Value: &livekit.DataPacket_ChatMessage{ChatMessage: &livekit.ChatMessage{Id: "m1", Timestamp: 1700000000000, Message: "hi"}}},
		{Value: &livekit.DataPacket_RpcRequest{RpcRequest: &livekit.RpcRequest{Id: "r1", Method: "ping", Payload: "{}", ResponseTimeoutMs: 5000, Version: 1}}},
		{DestinationIdentities: []string{"carol"}, Value: &livekit.DataPacket_StreamHeader{StreamHeader: &livekit.DataStream_Header{StreamId: "s1", Topic: "lk.chat"}}},
		// A sender claiming to be someone else.
		{ParticipantIdentity: "bob", ParticipantSid: "PA_bob", Value: &livekit.DataPacket_User{User: &livekit.UserPacket{
			ParticipantIdentity: "bob", ParticipantSid: "PA_bob", Payload: []byte("x"),
		}}},
		{Value: &livekit.DataPacket_Transcription{Transcription: &livekit.Transcription{TranscribedParticipantIdentity: "bob", TrackId: "TR_bob"}}},
		{Value: &livekit.DataPacket_Speaker{Speaker: &livekit.ActiveSpeakerUpdate{Speakers: []*livekit.SpeakerInfo{{Sid: "PA_bob", Level: 1, Active: true}}}}},
		{Value: &livekit.DataPacket_Metrics{Metrics: &livekit.MetricsBatch{StrData: []string{"bob"}}}},
	} {
		f.Add(dataPacket(f, pkt), true, false)
		f.Add(dataPacket(f, pkt), false, true)
	}
	// The identity again under its field number with another wire type:
	// Go keeps it as an unknown field, a JavaScript decoder may not.
	user := dataPacket(f, &livekit.DataPacket{Value: &livekit.DataPacket_User{User: &livekit.UserPacket{Payload: []byte("x")}}})
	f.Add(protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), user...), 4, protowire.VarintType), 5), true, false)
	f.Add([]byte{}, true, false)
	f.Add([]byte("not a protobuf"), false, false)

	f.Fuzz(func(t *testing.T, data []byte, reliable, agent bool) {
		from := sender{identity: "alice", sid: "PA_alice", agent: agent}
		wantKind := livekit.DataPacket_LOSSY
		if reliable {
			wantKind = livekit.DataPacket_RELIABLE
		}
		out, dests, err := relayedData(from, media.DataKind(wantKind), data)
		if err != nil {
			require.ErrorIs(t, err, media.ErrInvalidDataPacket)
			require.Nil(t, out)
			return
		}
		require.LessOrEqual(t, len(out), media.MaxDataMessage+2*(len(from.identity)+len(from.sid)+8))

		var pkt livekit.DataPacket
		require.NoError(t, proto.Unmarshal(out, &pkt))
		require.Equal(t, wantKind, pkt.Kind)
		require.Equal(t, from.identity, pkt.ParticipantIdentity)
		require.Equal(t, from.sid, pkt.ParticipantSid)
		var known livekit.DataPacket
		require.NoError(t, proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(out, &known))
		require.True(t, proto.Equal(&pkt, &known), "relays fields the node cannot read")

		top := fieldValues(t, out, 2, 4, 17)
		require.Equal(t, []string{from.identity}, top[4])
		require.Equal(t, []string{from.sid}, top[17])
		if u := pkt.GetUser(); u != nil {
			require.Equal(t, from.identity, u.ParticipantIdentity)
			require.Equal(t, from.sid, u.ParticipantSid)
			require.Len(t, top[2], 1)
			nested := fieldValues(t, []byte(top[2][0]), 1, 5)
			require.Equal(t, []string{from.identity}, nested[5])
			require.Equal(t, []string{from.sid}, nested[1])
		}
		switch pkt.Value.(type) {
		case *livekit.DataPacket_Speaker, *livekit.DataPacket_Metrics:
			t.Fatalf("relayed %T: only the node speaks about other participants", pkt.Value)
		case *livekit.DataPacket_Transcription:
			require.True(t, agent, "relayed a transcription from a participant that is not an agent")
		}
		wantDests := pkt.DestinationIdentities
		if len(wantDests) == 0 {
			wantDests = pkt.GetUser().GetDestinationIdentities()
		}
		require.Equal(t, wantDests, dests)
	})
}
