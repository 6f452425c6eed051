package livekit

import (
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/media"
)

// The core's enumerations convert by a cast: their values and names must
// be LiveKit's.
func TestEnumsAreLiveKits(t *testing.T) {
	for v := range livekit.DisconnectReason_name {
		require.Equal(t, livekit.DisconnectReason(v).String(), media.DisconnectReason(v).String())
	}
	for v := range livekit.TrackSource_name {
		require.Equal(t, livekit.TrackSource(v).String(), media.Source(v).String())
	}
	pairs := []struct{ core, lk int32 }{
		{int32(media.ReasonStateMismatch), int32(livekit.DisconnectReason_STATE_MISMATCH)},
		{int32(media.ReasonAgentError), int32(livekit.DisconnectReason_AGENT_ERROR)},
		{int32(media.LeaveDisconnect), int32(livekit.LeaveRequest_DISCONNECT)},
		{int32(media.LeaveResume), int32(livekit.LeaveRequest_RESUME)},
		{int32(media.LeaveReconnect), int32(livekit.LeaveRequest_RECONNECT)},
		{int32(media.DataReliable), int32(livekit.DataPacket_RELIABLE)},
		{int32(media.DataLossy), int32(livekit.DataPacket_LOSSY)},
		{int32(media.ParticipantStandard), int32(livekit.ParticipantInfo_STANDARD)},
		{int32(media.ParticipantIngress), int32(livekit.ParticipantInfo_INGRESS)},
		{int32(media.ParticipantEgress), int32(livekit.ParticipantInfo_EGRESS)},
		{int32(media.ParticipantSIP), int32(livekit.ParticipantInfo_SIP)},
		{int32(media.ParticipantAgent), int32(livekit.ParticipantInfo_AGENT)},
		{int32(media.ParticipantConnector), int32(livekit.ParticipantInfo_CONNECTOR)},
		{int32(media.ParticipantBridge), int32(livekit.ParticipantInfo_BRIDGE)},
		{int32(media.StateJoining), int32(livekit.ParticipantInfo_JOINING)},
		{int32(media.StateJoined), int32(livekit.ParticipantInfo_JOINED)},
		{int32(media.StateActive), int32(livekit.ParticipantInfo_ACTIVE)},
		{int32(media.StateDisconnected), int32(livekit.ParticipantInfo_DISCONNECTED)},
		{int32(media.QualityLow), int32(livekit.VideoQuality_LOW)},
		{int32(media.QualityMedium), int32(livekit.VideoQuality_MEDIUM)},
		{int32(media.QualityHigh), int32(livekit.VideoQuality_HIGH)},
		{int32(media.QualityOff), int32(livekit.VideoQuality_OFF)},
	}
	for _, p := range pairs {
		require.Equal(t, p.lk, p.core)
	}
}

// A track's TrackInfo reaches LiveKit clients with everything its
// publisher said, though the core reads only part of it.
func TestTrackInfoCrossesTheCoreUntouched(t *testing.T) {
	layers := []*livekit.VideoLayer{
		{Quality: livekit.VideoQuality_LOW, Width: 320, Height: 180, Bitrate: 150000, Rid: "q"},
		{Quality: livekit.VideoQuality_HIGH, Width: 1280, Height: 720, Bitrate: 1700000, Rid: "f"},
	}
	req := &livekit.AddTrackRequest{
		Cid: "cam", Name: "camera", Type: livekit.TrackType_VIDEO, Source: livekit.TrackSource_CAMERA,
		Width: 1280, Height: 720, Muted: true, Layers: layers, DisableDtx: true, Stereo: true, DisableRed: true,
		Encryption: livekit.Encryption_GCM, Stream: "camera-stream",
		AudioFeatures:   []livekit.AudioTrackFeature{livekit.AudioTrackFeature_TF_NOISE_SUPPRESSION},
		SimulcastCodecs: []*livekit.SimulcastCodec{{Codec: "vp8", Cid: "cam"}, {Codec: "h264", Cid: "cam-h264"}, {Cid: "x"}},
	}
	core := addTrackRequest(req)
	require.Equal(t, media.KindVideo, core.Kind)
	require.Equal(t, media.SourceCamera, core.Source)
	require.Equal(t, []string{"cam", "cam-h264", "x"}, core.SimulcastCids)
	require.Equal(t, []media.VideoLayer{{Quality: media.QualityLow, Width: 320, Height: 180}, {Quality: media.QualityHigh, Width: 1280, Height: 720}}, core.Layers)

	info := &media.TrackInfo{
		Sid: "TR_Vx", Kind: core.Kind, Source: core.Source, Name: core.Name, Muted: false, MimeType: "video/VP8", Mid: "1",
		Width: core.Width, Height: core.Height, Layers: core.Layers, FrontEnd: core.FrontEnd,
	}
	want := &livekit.TrackInfo{
		Sid: "TR_Vx", Type: livekit.TrackType_VIDEO, Name: "camera", Muted: false, Width: 1280, Height: 720,
		Simulcast: true, DisableDtx: true, Source: livekit.TrackSource_CAMERA, Layers: layers, MimeType: "video/VP8",
		Mid: "1", Stereo: true, DisableRed: true, Encryption: livekit.Encryption_GCM, Stream: "camera-stream",
		AudioFeatures: []livekit.AudioTrackFeature{livekit.AudioTrackFeature_TF_NOISE_SUPPRESSION},
		Codecs: []*livekit.SimulcastCodecInfo{
			{MimeType: "video/vp8", Cid: "cam", Layers: layers, VideoLayerMode: livekit.VideoLayer_ONE_SPATIAL_LAYER_PER_STREAM},
			{MimeType: "video/h264", Cid: "cam-h264", Layers: layers, VideoLayerMode: livekit.VideoLayer_ONE_SPATIAL_LAYER_PER_STREAM},
		},
	}
	got := trackInfo(info)
	require.True(t, proto.Equal(want, got), "got %v", got)
	// The conversion copies: the core's FrontEnd is not changed by it.
	got.Encryption = livekit.Encryption_NONE
	require.True(t, proto.Equal(want, trackInfo(info)))

	// A track from a front end that is not LiveKit's has its type and
	// layers from the core.
	info.FrontEnd = nil
	bare := trackInfo(info)
	require.Equal(t, livekit.TrackType_VIDEO, bare.Type)
	require.Len(t, bare.Layers, 2)
	require.Equal(t, uint32(320), bare.Layers[0].Width)
	require.True(t, bare.Simulcast)
}

func TestParticipantAndRoomInfo(t *testing.T) {
	at := time.UnixMilli(1700000000123)
	p := participantInfo(&media.ParticipantInfo{
		Sid: "PA_a", Identity: "a", Name: "A", Metadata: "m", Attributes: map[string]string{"k": "v"},
		State: media.StateActive, Kind: media.ParticipantAgent, Version: 3, JoinedAt: at, IsPublisher: true,
		Permissions:      media.Permissions{CanPublish: true, Sources: []media.Source{media.SourceMicrophone}},
		DisconnectReason: media.ReasonDuplicateIdentity,
	})
	require.Equal(t, livekit.ParticipantInfo_ACTIVE, p.State)
	require.Equal(t, livekit.ParticipantInfo_AGENT, p.Kind)
	require.Equal(t, livekit.DisconnectReason_DUPLICATE_IDENTITY, p.DisconnectReason)
	require.Equal(t, int64(1700000000), p.JoinedAt)
	require.Equal(t, int64(1700000000123), p.JoinedAtMs)
	require.Equal(t, []livekit.TrackSource{livekit.TrackSource_MICROPHONE}, p.Permission.CanPublishSources)
	require.True(t, p.Permission.CanPublish)
	require.False(t, p.Permission.CanSubscribe)

	r := roomInfo(&media.RoomInfo{Sid: "RM_x", Name: "x", CreatedAt: at, EmptyTimeout: 5 * time.Minute, MaxParticipants: 10, NumParticipants: 2})
	require.Equal(t, uint32(300), r.EmptyTimeout)
	require.Equal(t, int64(1700000000123), r.CreationTimeMs)
	require.Equal(t, uint32(10), r.MaxParticipants)
	require.Equal(t, uint32(2), r.NumParticipants)
}
