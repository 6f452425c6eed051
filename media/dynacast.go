package media

import "time"

// Dynacast: each publisher is told which simulcast layers of each of its
// video tracks anyone subscribes to, so that it stops encoding and sending
// the others, and starts again when someone wants them. This follows
// livekit-server (livekit/livekit pkg/rtc/dynacast/dynacastmanagervideo.go,
// dynacastqualityvideo.go; pkg/rtc/participant.go
// onSubscribedMaxQualityChange):
//
//   - What counts is the highest layer any subscriber wants, and every
//     layer up to it is enabled: the lowest layer stays on while anyone
//     subscribes, and a subscriber can always fall back to a lower one.
//     A subscriber that hid the track (UpdateTrackSettings disabled)
//     wants none; a federation trunk's export participant wants each
//     layer it pinned and has not paused (Participant.SetLayers), which is
//     what the far node's subscribers want of it. A subscriber still
//     forwarded a higher layer than it asked for (it switches on the lower
//     layer's next keyframe) keeps that one on, as livekit-server's
//     Forwarder.GetMaxSubscribedSpatial does.
//   - A rise is sent at once; a fall only once demand stayed below what
//     was sent for Config.DynacastPauseDelay (LiveKit's 5 s), so a
//     subscriber flipping layers does not flood the publisher nor make it
//     restart encoders; what is sent then is the demand at that moment.
//   - The first update goes out when the first subscriber subscribes, or,
//     when nobody has by then, Config.DynacastInitialWait (LiveKit's 10 s)
//     after the track was published: all layers off.
//   - Nothing is sent while the track is muted; unmuting sends the demand
//     at once (LiveKit's ForceUpdate on unmute).
//   - livekit-server sends these to every publisher (its DisableDynacast
//     is never set), whatever the client asked: livekit-client acts on
//     them only when its room has the dynacast option (Element Call sets
//     it), and ignores them otherwise, so they are always sent here too.
//
// The room's goroutine does all of it: the operations that change what is
// subscribed mark the track, and the room checks marked tracks after each
// batch of operations, and every track on its tick (the deadlines, and a
// subscriber's layer switch, which happens on the packet path).

// QualitySignaller is what a publisher's Signaller may also be: told
// which layers of one of its video tracks anyone subscribes to.
// media/livekit implements it (SubscribedQualityUpdate); a front end
// whose publishers cannot stop layers (the Jingle gateway) or that
// carries demand its own way (the federation trunk, UpTrack.DemandMask)
// does not. Like every Signaller method, it must return at once.
type QualitySignaller interface {
	// SendSubscribedQualities says which layers of the track trackSid,
	// of codec mime (e.g. "video/VP8"), to send: enabled[q] for quality
	// q (QualityLow, QualityMedium, QualityHigh: simulcast RIDs q, h,
	// f; a track of one layer is QualityLow). All false: nobody
	// subscribes.
	SendSubscribedQualities(trackSid, mime string, enabled [3]bool)
}

// dynacast is what the room's goroutine keeps of a video track's
// subscribed layers (UpTrack.dyn); the room's goroutine alone touches it.
type dynacast struct {
	// since is when the track was published.
	since time.Time
	// muted mirrors the track's mute: nothing is sent while it is set.
	muted bool
	// sent: an update went out; max is the highest layer it enabled, -1
	// none.
	sent bool
	max  int8
	// lowerSince is when demand was first seen below max, zero when it
	// is not.
	lowerSince time.Time
	// marked: the track is in Room.dynMarked.
	marked bool
}

// subscribedMax is the highest layer anyone subscribes to, -1 when nobody
// does (see the top of this file). Safe from any goroutine.
func (u *UpTrack) subscribedMax() int8 {
	best := int8(-1)
	for _, d := range u.downTracks() {
		d.mu.Lock()
		if !d.paused {
			l := d.pinned
			if l < 0 {
				l = max(d.target, d.current)
			}
			if !u.layered {
				l = 0
			}
			best = max(best, l)
		}
		d.mu.Unlock()
	}
	return best
}

// demandChanged marks up for a dynacast check after the current batch of
// operations. Room goroutine only.
func (r *Room) demandChanged(up *UpTrack) {
	if up.kind != KindVideo || up.dyn.marked {
		return
	}
	up.dyn.marked = true
	r.dynMarked = append(r.dynMarked, up)
}

// checkMarked checks the tracks marked since the last call. Room
// goroutine only.
func (r *Room) checkMarked(now time.Time) {
	for _, up := range r.dynMarked {
		up.dyn.marked = false
		r.checkDynacast(up, now, false)
	}
	clear(r.dynMarked)
	r.dynMarked = r.dynMarked[:0]
}

// checkAllDynacast checks every video track published in the room. Room
// goroutine only.
func (r *Room) checkAllDynacast(now time.Time) {
	for _, q := range r.participants {
		for _, up := range q.published {
			r.checkDynacast(up, now, false)
		}
	}
}

// checkDynacast tells up's publisher which layers to send, if that
// changed (see the top of this file); force, once a first update went
// out, sends it even when it did not, and without waiting. Room goroutine
// only.
func (r *Room) checkDynacast(up *UpTrack, now time.Time, force bool) {
	if up.kind != KindVideo || up.dyn.muted || up.pub.closed.Load() || up.pub.published[up.sid] != up {
		return
	}
	sig, ok := up.pub.sig.(QualitySignaller)
	if !ok {
		return
	}
	st := &up.dyn
	want := up.subscribedMax()
	switch {
	case force && st.sent:
	case !st.sent:
		if want < 0 && now.Sub(st.since) < r.sfu.cfg.dynacastInitialWait() {
			return
		}
	case want == st.max:
		st.lowerSince = time.Time{}
		return
	case want < st.max:
		if st.lowerSince.IsZero() {
			st.lowerSince = now
		}
		if now.Sub(st.lowerSince) < r.sfu.cfg.dynacastPauseDelay() {
			return
		}
	}
	st.sent, st.max, st.lowerSince = true, want, time.Time{}
	var enabled [3]bool
	for q := range enabled {
		enabled[q] = int8(q) <= want
	}
	up.pub.log.Debug().Str("track", up.sid).Int8("max_layer", want).Msg("subscribed layers")
	sig.SendSubscribedQualities(up.sid, up.mime, enabled)
}
