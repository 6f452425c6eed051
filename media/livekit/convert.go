package livekit

import (
	"time"

	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/media"
)

// The conversions between LiveKit's protobufs and the core's types
// (media/model.go). The core's enumerations have LiveKit's numeric
// values, so an enumeration converts by a cast; what a LiveKit client
// says of a track that the core has no use for travels in
// TrackInfo.FrontEnd as a *livekit.TrackInfo and comes back untouched.

// addTrackRequest is what the core needs of an add_track request. The
// rest of it (type, DTX, stereo, RED, encryption, stream, audio features,
// the layers as sent, the codecs) is kept as a partial TrackInfo for
// trackInfo to send back.
func addTrackRequest(req *livekit.AddTrackRequest) *media.AddTrackRequest {
	out := &media.AddTrackRequest{
		Cid: req.GetCid(), Source: media.Source(req.GetSource()), Name: req.GetName(), Muted: req.GetMuted(),
		Width: req.GetWidth(), Height: req.GetHeight(), Layers: videoLayers(req.GetLayers()),
	}
	switch req.GetType() {
	case livekit.TrackType_AUDIO:
		out.Kind = media.KindAudio
	case livekit.TrackType_VIDEO:
		out.Kind = media.KindVideo
	}
	front := &livekit.TrackInfo{
		Type: req.GetType(), DisableDtx: req.GetDisableDtx(), Stereo: req.GetStereo(), DisableRed: req.GetDisableRed(),
		Layers: req.GetLayers(), Encryption: req.GetEncryption(), Stream: req.GetStream(), AudioFeatures: req.GetAudioFeatures(),
	}
	for _, sc := range req.GetSimulcastCodecs() {
		out.SimulcastCids = append(out.SimulcastCids, sc.GetCid())
		if sc.GetCodec() == "" {
			continue
		}
		front.Codecs = append(front.Codecs, &livekit.SimulcastCodecInfo{
			MimeType: "video/" + sc.GetCodec(), Cid: sc.GetCid(), Layers: req.GetLayers(),
			VideoLayerMode: livekit.VideoLayer_ONE_SPATIAL_LAYER_PER_STREAM,
		})
	}
	// Cloned so that nothing the request still points to is shared.
	out.FrontEnd = proto.Clone(front).(*livekit.TrackInfo)
	return out
}

func videoLayers(in []*livekit.VideoLayer) []media.VideoLayer {
	if len(in) == 0 {
		return nil
	}
	out := make([]media.VideoLayer, len(in))
	for i, l := range in {
		out[i] = media.VideoLayer{Quality: media.VideoQuality(l.GetQuality()), Width: l.GetWidth(), Height: l.GetHeight()}
	}
	return out
}

// trackInfo is t for a LiveKit client: what a LiveKit publisher sent
// (TrackInfo.FrontEnd) with the core's fields over it. A track from
// another front end has its layers and type from the core.
func trackInfo(t *media.TrackInfo) *livekit.TrackInfo {
	out := &livekit.TrackInfo{}
	if front, ok := t.FrontEnd.(*livekit.TrackInfo); ok && front != nil {
		out = proto.Clone(front).(*livekit.TrackInfo)
	} else {
		switch t.Kind {
		case media.KindAudio:
			out.Type = livekit.TrackType_AUDIO
		case media.KindVideo:
			out.Type = livekit.TrackType_VIDEO
		}
		for _, l := range t.Layers {
			out.Layers = append(out.Layers, &livekit.VideoLayer{
				Quality: livekit.VideoQuality(l.Quality), Width: l.Width, Height: l.Height,
			})
		}
	}
	out.Sid, out.Name, out.Muted, out.Source = t.Sid, t.Name, t.Muted, livekit.TrackSource(t.Source)
	out.Width, out.Height, out.Simulcast = t.Width, t.Height, len(t.Layers) > 1
	out.MimeType, out.Mid = t.MimeType, t.Mid
	return out
}

func participantInfo(p *media.ParticipantInfo) *livekit.ParticipantInfo {
	tracks := make([]*livekit.TrackInfo, len(p.Tracks))
	for i, t := range p.Tracks {
		tracks[i] = trackInfo(t)
	}
	sources := make([]livekit.TrackSource, len(p.Permissions.Sources))
	for i, s := range p.Permissions.Sources {
		sources[i] = livekit.TrackSource(s)
	}
	return &livekit.ParticipantInfo{
		Sid: p.Sid, Identity: p.Identity, Name: p.Name, Metadata: p.Metadata, Attributes: p.Attributes,
		State: livekit.ParticipantInfo_State(p.State), Tracks: tracks, Version: p.Version,
		Permission: &livekit.ParticipantPermission{
			CanPublish: p.Permissions.CanPublish, CanSubscribe: p.Permissions.CanSubscribe,
			CanPublishData: p.Permissions.CanPublishData, Hidden: p.Permissions.Hidden, CanPublishSources: sources,
		},
		Kind: livekit.ParticipantInfo_Kind(p.Kind), JoinedAt: p.JoinedAt.Unix(), JoinedAtMs: p.JoinedAt.UnixMilli(),
		IsPublisher: p.IsPublisher, DisconnectReason: livekit.DisconnectReason(p.DisconnectReason),
	}
}

func participantInfos(ps []*media.ParticipantInfo) []*livekit.ParticipantInfo {
	if ps == nil {
		return nil
	}
	out := make([]*livekit.ParticipantInfo, len(ps))
	for i, p := range ps {
		out[i] = participantInfo(p)
	}
	return out
}

func roomInfo(r *media.RoomInfo) *livekit.Room {
	return &livekit.Room{
		Sid: r.Sid, Name: r.Name, CreationTime: r.CreatedAt.Unix(), CreationTimeMs: r.CreatedAt.UnixMilli(),
		EmptyTimeout: uint32(r.EmptyTimeout / time.Second), MaxParticipants: uint32(r.MaxParticipants),
		NumParticipants: uint32(r.NumParticipants),
	}
}

func speakerInfos(in []media.SpeakerInfo) []*livekit.SpeakerInfo {
	out := make([]*livekit.SpeakerInfo, len(in))
	for i, s := range in {
		out[i] = &livekit.SpeakerInfo{Sid: s.Sid, Level: s.Level, Active: s.Active}
	}
	return out
}

func trackSettings(s *livekit.UpdateTrackSettings) *media.TrackSettings {
	return &media.TrackSettings{
		TrackSids: s.GetTrackSids(), Disabled: s.GetDisabled(), Quality: media.VideoQuality(s.GetQuality()),
		Width: s.GetWidth(), Height: s.GetHeight(),
	}
}

func permissions(g *Grant) media.Permissions {
	p := media.Permissions{
		CanPublish: g.CanPublish, CanSubscribe: g.CanSubscribe, CanPublishData: g.CanPublishData, Hidden: g.Hidden,
	}
	for _, s := range g.Sources {
		p.Sources = append(p.Sources, media.Source(s))
	}
	return p
}
