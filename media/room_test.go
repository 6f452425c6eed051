package media

import (
	"context"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// blockingTransport is a fakeTransport whose Close waits until release is
// closed, and whose readers end the participant's tracks as they stop, as
// media/rtc's do (Layer.End, which calls back into the room).
type blockingTransport struct {
	*fakeTransport
	release chan struct{}
	layer   chan *Layer
	closed  chan struct{}
}

func (b *blockingTransport) Close() {
	<-b.release
	select {
	case l := <-b.layer:
		l.End()
	default:
	}
	close(b.closed)
}

// TestRoomNeverWaitsForATransport: a participant whose transport takes
// long to close leaves the room at once; while its transport is still
// closing, and ends a track from its Close, the room goes on joining,
// updating and removing others; Room.close then waits for the transport.
func TestRoomNeverWaitsForATransport(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("slow", true)
	require.NoError(t, err)
	ctx := context.Background()
	slow := &blockingTransport{fakeTransport: newFakeTransport(nil), release: make(chan struct{}),
		layer: make(chan *Layer, 1), closed: make(chan struct{})}
	a, _, err := r.Join(ctx, JoinParams{Identity: "a", Permissions: allowAll(), AutoSubscribe: true, Signaller: newRecordingSignaller(), Transport: slow})
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	require.NoError(t, a.AddTrack(ctx, &AddTrackRequest{Cid: "mic", Kind: KindAudio}))
	a.Receive(IncomingStream{TrackID: "mic", Codec: Codec{MimeType: "audio/opus", ClockRate: 48000}, SSRC: 7,
		Start: func(l *Layer) { slow.layer <- l }})

	sb := newRecordingSignaller()
	b, _, err := r.Join(ctx, JoinParams{Identity: "b", Permissions: allowAll(), AutoSubscribe: true, Signaller: sb, Transport: newFakeTransport(sb)})
	require.NoError(t, err)
	require.NoError(t, b.Start(ctx))
	require.True(t, s.HasParticipant("slow", "a"))

	left := make(chan struct{})
	go func() { a.Disconnect(ReasonClientInitiated); close(left) }()
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("Disconnect waited for the transport to close")
	}
	require.False(t, s.HasParticipant("slow", "a"))
	require.NoError(t, b.UpdateMetadata(ctx, "", "still here", nil), "the room goes on")
	c, _, err := r.Join(ctx, JoinParams{Identity: "c", Permissions: allowAll(), Signaller: newRecordingSignaller(), Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	require.True(t, r.RemoveParticipant("c", ReasonParticipantRemoved))

	closed := make(chan struct{})
	go func() { r.close(ReasonRoomClosed); close(closed) }()
	select {
	case <-closed:
		t.Fatal("the room closed before the transport it was closing")
	case <-time.After(100 * time.Millisecond):
	}
	close(slow.release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the room did not close")
	}
	<-slow.closed
}

// TestNewcomerLearnsWhoSpeaks: someone who has been speaking since before
// a participant joined is announced to it when it starts, although
// SpeakersChanged otherwise carries only changes.
func TestNewcomerLearnsWhoSpeaks(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("speak", true)
	require.NoError(t, err)
	ctx := context.Background()
	sa := newRecordingSignaller()
	a, _, err := r.Join(ctx, JoinParams{Identity: "a", Permissions: allowAll(), Signaller: sa, Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	require.NoError(t, a.AddTrack(ctx, &AddTrackRequest{Cid: "mic", Kind: KindAudio}))
	layers := make(chan *Layer, 1)
	a.Receive(IncomingStream{TrackID: "mic", Codec: Codec{MimeType: "audio/opus", ClockRate: 48000}, SSRC: 7,
		AudioLevelExt: 1, Start: func(l *Layer) { layers <- l }})
	l := <-layers
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() { // loud audio (-20 dBov) every 20 ms
		defer close(fed)
		for seq := uint16(0); ; seq++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			pkt := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 7}, Payload: []byte{1, 2, 3}}
			require.NoError(t, pkt.SetExtension(1, []byte{20}))
			b, err := pkt.Marshal()
			require.NoError(t, err)
			l.WriteRTP(b, time.Now().UnixNano())
		}
	}()
	defer func() { close(stop); <-fed }()
	require.Eventually(t, func() bool { return len(sa.of("speakers")) > 0 }, 5*time.Second, 10*time.Millisecond, "a is heard speaking")

	sb := newRecordingSignaller()
	b, _, err := r.Join(ctx, JoinParams{Identity: "b", Permissions: allowAll(), Signaller: sb, Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, b.Start(ctx))
	speakers := sb.of("speakers")
	require.NotEmpty(t, speakers, "b is told at once")
	require.Len(t, speakers[0].speakers, 1)
	require.Equal(t, a.SID(), speakers[0].speakers[0].Sid)
	require.True(t, speakers[0].speakers[0].Active)
}

// TestClosedRoomQueuesNothing: what a transport's goroutines post to a room
// that has closed (a track ending after its participant left) is dropped,
// not kept in a queue nobody runs.
func TestClosedRoomQueuesNothing(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("closed", true)
	require.NoError(t, err)
	r.close(ReasonRoomClosed)
	for range 100 {
		r.post(func() { t.Error("ran on a closed room") })
	}
	r.qmu.Lock()
	defer r.qmu.Unlock()
	require.Empty(t, r.queue)
	require.ErrorIs(t, r.do(context.Background(), func() {}), ErrRoomClosed)
}

// TestRoomRelaysData: a data packet, already stamped by its sender's
// transport, goes to every started member but the sender, or only to its
// destinations; nothing goes out from a sender without the data grant,
// nor when it is empty or over the size limit.
func TestRoomRelaysData(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("data", true)
	require.NoError(t, err)
	ctx := context.Background()
	join := func(identity string, perms Permissions, start bool) (*Participant, *fakeTransport) {
		ft := newFakeTransport(nil)
		p, _, err := r.Join(ctx, JoinParams{Identity: identity, Permissions: perms, Signaller: newRecordingSignaller(), Transport: ft})
		require.NoError(t, err)
		if start {
			require.NoError(t, p.Start(ctx))
		}
		return p, ft
	}
	mute := allowAll()
	mute.CanPublishData = false
	a, ta := join("a", allowAll(), true)
	_, tb := join("b", allowAll(), true)
	_, tc := join("c", allowAll(), true)
	_, tw := join("waiting", allowAll(), false)
	m, _ := join("m", mute, true)
	got := func(ft *fakeTransport) []string {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		var out []string
		for _, d := range ft.data {
			out = append(out, string(d))
		}
		return out
	}

	a.RelayData(DataReliable, []byte("all"), nil)
	a.RelayData(DataLossy, []byte("to c"), []string{"c", "nobody"})
	m.RelayData(DataReliable, []byte("not allowed"), nil)
	a.RelayData(DataReliable, nil, nil)
	a.RelayData(DataReliable, make([]byte, MaxDataMessage+1), nil)

	require.Empty(t, got(ta), "echoed to the sender")
	require.Equal(t, []string{"all"}, got(tb))
	require.Equal(t, []string{"all", "to c"}, got(tc))
	require.Empty(t, got(tw), "sent before the participant started")
}

// TestShutdownAsksToReconnect: when the node stops, each participant is
// told to join again (a restart), while one removed from a room is not.
func TestShutdownAsksToReconnect(t *testing.T) {
	s := New(testConfig(), zerolog.Nop(), nil)
	room, err := s.CreateRoom("r")
	require.NoError(t, err)
	recs := map[string]*recordingSignaller{}
	for _, id := range []string{"alice", "bob"} {
		recs[id] = newRecordingSignaller()
		p, _, err := room.Join(context.Background(), JoinParams{Identity: id, Signaller: recs[id], Transport: newFakeTransport(nil),
			Permissions: Permissions{CanSubscribe: true}})
		require.NoError(t, err)
		require.NoError(t, p.Start(context.Background()))
	}
	require.True(t, s.RemoveParticipant("r", "bob", ReasonParticipantRemoved))
	s.Close()
	alice, bob := recs["alice"].of("leave"), recs["bob"].of("leave")
	require.Len(t, alice, 1)
	require.Equal(t, ReasonServerShutdown, alice[0].reason)
	require.Equal(t, LeaveReconnect, alice[0].action, "a node that stops asks its clients to join again")
	require.Len(t, bob, 1)
	require.Equal(t, LeaveDisconnect, bob[0].action, "a removed participant is not asked back")
}
