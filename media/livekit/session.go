package livekit

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/media"
	"entente.dev/entente/media/rtc"
)

// outQueue bounds the signal messages waiting for a slow client; a client
// that lets it fill is disconnected rather than stalling its room.
const outQueue = 512

// session is one client's signal connection. It implements media.Signaller
// and rtc.Signaller:
// sends are queued and written by one writer goroutine, which the session
// owns and stops.
type session struct {
	conn *websocket.Conn
	log  zerolog.Logger
	out  chan *livekit.SignalResponse

	// heardAt is when the client was last heard from (unix nanoseconds):
	// a request, or an answer to a websocket ping.
	heardAt atomic.Int64

	mu      sync.Mutex
	closing bool

	stop     chan struct{} // closed to stop the writer
	stopOnce sync.Once
	done     chan struct{} // closed when the writer has exited
}

func newSession(conn *websocket.Conn, log zerolog.Logger) *session {
	s := &session{
		conn: conn, log: log, out: make(chan *livekit.SignalResponse, outQueue),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	s.heard()
	go s.writeLoop()
	return s
}

// wait stops the writer after it has flushed what is queued, then closes
// the socket.
func (s *session) wait() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

func (s *session) writeLoop() {
	defer close(s.done)
	defer s.conn.Close(websocket.StatusNormalClosure, "")
	for {
		select {
		case m := <-s.out:
			if !s.write(m) {
				return
			}
			if _, ok := m.Message.(*livekit.SignalResponse_Leave); ok {
				return
			}
		case <-s.stop:
			for {
				select {
				case m := <-s.out:
					if !s.write(m) {
						return
					}
				default:
					return
				}
			}
		}
	}
}

func (s *session) write(m *livekit.SignalResponse) bool {
	b, err := proto.Marshal(m)
	if err != nil {
		s.log.Warn().Err(err).Msg("marshal signal response")
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := s.conn.Write(ctx, websocket.MessageBinary, b); err != nil {
		s.log.Debug().Err(err).Msg("signal write failed")
		return false
	}
	return true
}

// send queues one message; a full queue closes the connection.
func (s *session) send(m *livekit.SignalResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	select {
	case s.out <- m:
	default:
		s.log.Warn().Msg("signal queue full, closing the connection")
		s.closing = true
		s.stopOnce.Do(func() { close(s.stop) })
		_ = s.conn.CloseNow()
	}
}

// SendOffer implements rtc.Signaller.
func (s *session) SendOffer(sd webrtc.SessionDescription, id uint32, mids map[string]string) {
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Offer{Offer: &livekit.SessionDescription{
		Type: sd.Type.String(), Sdp: sd.SDP, Id: id, MidToTrackId: mids,
	}}})
}

// SendAnswer implements rtc.Signaller.
func (s *session) SendAnswer(sd webrtc.SessionDescription, id uint32) {
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Answer{Answer: &livekit.SessionDescription{
		Type: sd.Type.String(), Sdp: sd.SDP, Id: id,
	}}})
}

// SendCandidate implements rtc.Signaller.
func (s *session) SendCandidate(c *webrtc.ICECandidateInit, target rtc.Target) {
	if c == nil {
		return
	}
	b, err := json.Marshal(c)
	if err != nil {
		return
	}
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Trickle{Trickle: &livekit.TrickleRequest{
		CandidateInit: string(b), Target: livekit.SignalTarget(target),
	}}})
}

// SendParticipants implements media.Signaller.
func (s *session) SendParticipants(infos []*media.ParticipantInfo) {
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Update{Update: &livekit.ParticipantUpdate{
		Participants: participantInfos(infos),
	}}})
}

// SendTrackPublished implements media.Signaller.
func (s *session) SendTrackPublished(cid string, info *media.TrackInfo) {
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_TrackPublished{
		TrackPublished: &livekit.TrackPublishedResponse{Cid: cid, Track: trackInfo(info)},
	}})
}

// SendSpeakers implements media.Signaller.
func (s *session) SendSpeakers(speakers []media.SpeakerInfo) {
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_SpeakersChanged{
		SpeakersChanged: &livekit.SpeakersChanged{Speakers: speakerInfos(speakers)},
	}})
}

// SendConnQuality implements media.ConnQualitySignaller. The core's
// qualities have LiveKit's values.
func (s *session) SendConnQuality(infos []media.ConnQualityInfo) {
	u := &livekit.ConnectionQualityUpdate{Updates: make([]*livekit.ConnectionQualityInfo, 0, len(infos))}
	for _, in := range infos {
		u.Updates = append(u.Updates, &livekit.ConnectionQualityInfo{
			ParticipantSid: in.ParticipantSID, Quality: livekit.ConnectionQuality(in.Quality), Score: in.Score,
		})
	}
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_ConnectionQuality{ConnectionQuality: u}})
}

// SendLeave implements media.Signaller: the leave is the last frame. The
// core's reasons and actions have LiveKit's values.
func (s *session) SendLeave(reason media.DisconnectReason, action media.LeaveAction) {
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Leave{Leave: &livekit.LeaveRequest{
		CanReconnect: action == media.LeaveReconnect, Reason: livekit.DisconnectReason(reason),
		Action: livekit.LeaveRequest_Action(action),
	}}})
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
}

// heard records that the client was heard from now.
func (s *session) heard() { s.heardAt.Store(time.Now().UnixNano()) }

// lastHeard is when the client was last heard from.
func (s *session) lastHeard() time.Time { return time.Unix(0, s.heardAt.Load()) }

// readLoop handles the client's requests until the socket closes, the
// client leaves or it is removed.
func (s *session) readLoop(ctx context.Context, p *media.Participant, t *rtc.Transport, g *Grant) {
	for {
		typ, data, err := s.conn.Read(ctx)
		if err != nil {
			return
		}
		s.heard()
		if typ != websocket.MessageBinary {
			s.log.Debug().Msg("ignoring a text signal frame")
			continue
		}
		if !s.dispatch(ctx, p, t, g, data) {
			return
		}
	}
}

// dispatch decodes one binary signal frame and applies it. A malformed
// frame is dropped. It returns false when the session ends.
func (s *session) dispatch(ctx context.Context, p *media.Participant, t *rtc.Transport, g *Grant, data []byte) bool {
	var req livekit.SignalRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		s.log.Debug().Err(err).Msg("dropping a malformed signal frame")
		return true
	}
	return s.handle(ctx, p, t, g, &req)
}

// handle applies one request. It returns false when the session ends.
// Requests the node does not act on are accepted and ignored, never a
// reason to close (livekit/livekit pkg/rtc/signalling/signalhandler.go).
func (s *session) handle(ctx context.Context, p *media.Participant, t *rtc.Transport, g *Grant, req *livekit.SignalRequest) bool {
	log := zerolog.Ctx(ctx)
	var err error
	switch m := req.Message.(type) {
	case *livekit.SignalRequest_Offer:
		err = t.HandleOffer(sessionDescription(m.Offer), m.Offer.GetId())
	case *livekit.SignalRequest_Answer:
		err = t.HandleAnswer(sessionDescription(m.Answer), m.Answer.GetId())
	case *livekit.SignalRequest_Trickle:
		var c webrtc.ICECandidateInit
		if c, err = rtc.ParseCandidate(m.Trickle.GetCandidateInit()); err == nil {
			err = t.HandleCandidate(c, rtc.Target(m.Trickle.GetTarget()))
		}
	case *livekit.SignalRequest_AddTrack:
		err = p.AddTrack(ctx, addTrackRequest(m.AddTrack))
	case *livekit.SignalRequest_Mute:
		err = p.SetMuted(ctx, m.Mute.GetSid(), m.Mute.GetMuted())
	case *livekit.SignalRequest_Subscription:
		sids := append([]string(nil), m.Subscription.GetTrackSids()...)
		for _, pt := range m.Subscription.GetParticipantTracks() {
			sids = append(sids, pt.GetTrackSids()...)
		}
		err = p.UpdateSubscription(ctx, sids, m.Subscription.GetSubscribe())
	case *livekit.SignalRequest_TrackSetting:
		err = p.UpdateTrackSettings(ctx, trackSettings(m.TrackSetting))
	case *livekit.SignalRequest_UpdateMetadata:
		s.updateMetadata(ctx, p, g, m.UpdateMetadata)
	case *livekit.SignalRequest_Leave:
		p.Leave()
		return false
	case *livekit.SignalRequest_Ping:
		s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Pong{Pong: time.Now().UnixMilli()}})
	case *livekit.SignalRequest_PingReq:
		s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_PongResp{PongResp: &livekit.Pong{
			LastPingTimestamp: m.PingReq.GetTimestamp(), Timestamp: time.Now().UnixMilli(),
		}}})
	}
	if err != nil {
		if errors.Is(err, media.ErrParticipantClosed) || errors.Is(err, media.ErrRoomClosed) {
			return false
		}
		log.Debug().Err(err).Type("request", req.Message).Msg("signal request failed")
	}
	return true
}

func sessionDescription(sd *livekit.SessionDescription) webrtc.SessionDescription {
	return webrtc.SessionDescription{Type: webrtc.NewSDPType(sd.GetType()), SDP: sd.GetSdp()}
}

// updateMetadata applies the client's change of its own name, metadata or
// attributes and answers with a RequestResponse carrying the request's id,
// as LiveKit does for every update_metadata (livekit/livekit pkg/rtc
// participant.go UpdateMetadata): OK, NOT_ALLOWED without the
// canUpdateOwnMetadata grant or for an attribute the token asserted,
// LIMIT_EXCEEDED over a size limit or the update rate. livekit-client
// waits for that answer before it resolves setAttributes/setMetadata.
func (s *session) updateMetadata(ctx context.Context, p *media.Participant, g *Grant, u *livekit.UpdateParticipantMetadata) {
	var err error
	if g.CanUpdateOwn {
		err = p.UpdateMetadata(ctx, u.GetName(), u.GetMetadata(), u.GetAttributes())
	} else {
		err = media.ErrPermissionDenied
	}
	resp := &livekit.RequestResponse{RequestId: u.GetRequestId()}
	switch {
	case err == nil:
		resp.Reason = livekit.RequestResponse_OK
	case errors.Is(err, media.ErrPermissionDenied):
		resp.Reason, resp.Message = livekit.RequestResponse_NOT_ALLOWED, "does not have permission to update own metadata"
	case errors.Is(err, media.ErrAttributeProtected):
		resp.Reason, resp.Message = livekit.RequestResponse_NOT_ALLOWED, err.Error()
	case errors.Is(err, media.ErrLimitExceeded), errors.Is(err, media.ErrRateLimited):
		resp.Reason, resp.Message = livekit.RequestResponse_LIMIT_EXCEEDED, err.Error()
	case errors.Is(err, media.ErrInvalidName):
		resp.Reason, resp.Message = livekit.RequestResponse_INVALID_REQUEST, err.Error()
	default:
		// The participant has left: nothing to answer.
		return
	}
	if err != nil {
		zerolog.Ctx(ctx).Debug().Err(err).Msg("metadata update refused")
	}
	// The request is echoed without its values, which are the client's own.
	resp.Request = &livekit.RequestResponse_UpdateMetadata{UpdateMetadata: &livekit.UpdateParticipantMetadata{RequestId: u.GetRequestId()}}
	s.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RequestResponse{RequestResponse: resp}})
}
