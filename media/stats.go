package media

import "context"

// Stats is the node's media activity, for its operators (the metrics
// endpoint): what is there now, and counters since the node started.
type Stats struct {
	Rooms int
	// Participants are this node's own (hidden ones included: federation
	// export participants); RemoteParticipants those a trunk brought.
	Participants, RemoteParticipants int
	// PublishedTracks are the tracks being published, Subscriptions the
	// down tracks forwarding them (to clients and to trunks).
	PublishedTracks, Subscriptions int
	// ForwardedPackets and ForwardedBytes (RTP payload) are what down
	// tracks sent, retransmissions not included.
	ForwardedPackets, ForwardedBytes uint64
	// NackedPackets are the packets subscribers reported lost (RTCP NACK),
	// Retransmitted those resent from the cache.
	NackedPackets, Retransmitted uint64
}

// retire adds an ended down track's counts to the node's totals.
func (s *SFU) retire(d *DownTrack) {
	s.retired.packets.Add(d.packets.Load())
	s.retired.bytes.Add(d.bytes.Load())
	s.retired.nacked.Add(d.nacked.Load())
	s.retired.resent.Add(d.resent.Load())
}

// Stats reads the rooms (each on its own goroutine, so a busy room delays
// the answer; ctx bounds the wait) and the counters.
func (s *SFU) Stats(ctx context.Context) Stats {
	s.mu.Lock()
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	var st Stats
	var live Stats
	for _, r := range rooms {
		var rs Stats
		err := r.do(ctx, func() {
			for _, p := range r.participants {
				if p.origin != "" {
					rs.RemoteParticipants++
				} else {
					rs.Participants++
				}
				rs.PublishedTracks += len(p.published)
				for _, d := range p.downs {
					rs.Subscriptions++
					rs.ForwardedPackets += d.packets.Load()
					rs.ForwardedBytes += d.bytes.Load()
					rs.NackedPackets += d.nacked.Load()
					rs.Retransmitted += d.resent.Load()
				}
			}
		})
		if err != nil {
			continue // closed meanwhile, or ctx done: its tracks are retired or unread
		}
		st.Rooms++
		live.Participants += rs.Participants
		live.RemoteParticipants += rs.RemoteParticipants
		live.PublishedTracks += rs.PublishedTracks
		live.Subscriptions += rs.Subscriptions
		live.ForwardedPackets += rs.ForwardedPackets
		live.ForwardedBytes += rs.ForwardedBytes
		live.NackedPackets += rs.NackedPackets
		live.Retransmitted += rs.Retransmitted
	}
	st.Participants, st.RemoteParticipants = live.Participants, live.RemoteParticipants
	st.PublishedTracks, st.Subscriptions = live.PublishedTracks, live.Subscriptions
	st.ForwardedPackets = s.retired.packets.Load() + live.ForwardedPackets
	st.ForwardedBytes = s.retired.bytes.Load() + live.ForwardedBytes
	st.NackedPackets = s.retired.nacked.Load() + live.NackedPackets
	st.Retransmitted = s.retired.resent.Load() + live.Retransmitted
	return st
}
