package media

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

const (
	maxLayers = 3
	// keyframeInterval is the shortest time between two keyframe requests
	// sent to a publisher for one layer. Browsers ignore keyframe requests
	// that come sooner than 300 ms after the last one (libwebrtc
	// video/encoder_rtcp_feedback.cc, kMinKeyframeSendIntervalMs), so
	// asking more often would only load the network. (The load generator
	// answers every request, which is why a shorter interval shortens its
	// joins: 296-325 ms against 330-456 ms at simulcast 2x80.)
	keyframeInterval = 300 * time.Millisecond
	// layerStale is how long a layer may be silent before subscribers fall
	// back to another one.
	layerStale = 1500 * time.Millisecond
)

// Layer is one incoming RTP stream of a published track: the only one for
// audio and plain video, one per RID for simulcast. Its transport feeds it
// (WriteRTP) from one goroutine.
type Layer struct {
	up   *UpTrack
	idx  int8
	ssrc uint32
	src  TrackSource
	hdr  rtp.Header // the packet being forwarded
	// fanout is the packet's trip to the subscribers, kept here because
	// sinks, behind an interface, would make one on the stack escape.
	fanout Fanout
	// cache keeps recent packets to answer NACKs; nil for audio, for
	// which NACK is not negotiated (media/rtc/engine.go registers it for video only)
	// and 768 KiB per stream would be wasted.
	cache      *packetCache
	lastPLI    atomic.Int64
	lastPacket atomic.Int64
	packets    atomic.Uint64
	// stats feeds the connection quality assessment (quality.go).
	stats upStats
}

// UpTrack is a track a participant publishes. Its transport's reader
// goroutine for each layer forwards each packet to every DownTrack
// subscribed to it; the subscriber list is copied on write so the packet
// path takes no shared lock.
type UpTrack struct {
	sid   string
	cid   string
	kind  Kind
	mime  string
	ck    codecKind
	codec Codec
	pub   *Participant

	layers [maxLayers]atomic.Pointer[Layer]
	downs  atomic.Pointer[[]*DownTrack]
	mu     sync.Mutex // guards changes to downs

	audioLevelID uint8
	// Audio level window, read and reset by the room's speaker worker.
	loudPackets atomic.Uint32
	minLevel    atomic.Uint32 // dBov, 127 = silence

	closeOnce sync.Once
	closed    chan struct{}
	// windowLoss is the worst loss of its streams in the last quality
	// window (quality.go). Room goroutine only.
	windowLoss float64
	// layered: the track is simulcast (its streams carry RIDs, or its
	// publisher announced several layers). Set before it is published.
	layered bool
}

// simulcast reports whether the track comes in several layers.
func (u *UpTrack) simulcast() bool { return u.layered }

func newUpTrack(sid, cid string, pub *Participant, codec Codec, audioLevelID uint8) *UpTrack {
	u := &UpTrack{
		sid: sid, cid: cid, pub: pub, codec: codec, kind: KindOf(codec.MimeType), mime: codec.MimeType, ck: kindOfCodec(codec.MimeType),
		audioLevelID: audioLevelID, closed: make(chan struct{}),
	}
	empty := []*DownTrack{}
	u.downs.Store(&empty)
	u.minLevel.Store(127)
	return u
}

// SID is the track's LiveKit sid.
func (u *UpTrack) SID() string { return u.sid }

// Kind is audio or video.
func (u *UpTrack) Kind() Kind { return u.kind }

// Codec is the track's codec.
func (u *UpTrack) Codec() Codec { return u.codec }

// Publisher is the participant that publishes the track.
func (u *UpTrack) Publisher() *Participant { return u.pub }

// addLayer makes the layer for one incoming stream, or returns nil when
// the layer exists already.
func (u *UpTrack) addLayer(idx int8, ssrc uint32, src TrackSource) *Layer {
	l := &Layer{up: u, idx: idx, ssrc: ssrc, src: src}
	if u.kind == KindVideo {
		l.cache = &packetCache{}
	}
	if !u.layers[idx].CompareAndSwap(nil, l) {
		return nil
	}
	l.lastPacket.Store(time.Now().UnixNano())
	return l
}

// started is called once the layer's transport feeds it.
func (l *Layer) started() {
	for _, d := range *l.up.downs.Load() {
		d.retarget()
	}
}

// WriteRTP is the packet path: one raw RTP packet of the layer, received
// at now (UnixNano), is cached and forwarded to every subscriber. Its
// transport calls it from one goroutine; it does not keep pkt.
func (l *Layer) WriteRTP(pkt []byte, now int64) {
	if len(pkt) > MaxPacketSize {
		return
	}
	l.up.forward(l, &l.hdr, pkt, now)
}

// End is called by the transport when the stream ends: the whole track is
// unpublished.
func (l *Layer) End() { l.up.close() }

// Packets is how many packets the layer has forwarded.
func (l *Layer) Packets() uint64 { return l.packets.Load() }

// Track is the published track the layer belongs to.
func (l *Layer) Track() *UpTrack { return l.up }

// SSRC is the incoming stream's SSRC.
func (l *Layer) SSRC() uint32 { return l.ssrc }

// forward handles one raw packet read from layer l.
func (u *UpTrack) forward(l *Layer, h *rtp.Header, pkt []byte, now int64) {
	hl, err := h.Unmarshal(pkt)
	if err != nil {
		return
	}
	payload := pkt[hl:]
	media := payload
	if h.Padding && len(payload) > 0 {
		pad := int(payload[len(payload)-1])
		if pad > len(payload) {
			return
		}
		media = payload[:len(payload)-pad]
	}
	var epoch uint32
	if l.cache != nil {
		if !l.cache.store(h.SequenceNumber, pkt) {
			return // a duplicate or a straggler (packetCache.store)
		}
		epoch = l.cache.epoch
	}
	l.lastPacket.Store(now)
	l.packets.Add(1)
	l.stats.observe(h.SequenceNumber, h.Timestamp, now, u.codec.ClockRate)
	if u.audioLevelID != 0 {
		u.observeLevel(h)
	}
	kf := len(media) > 0 && u.ck.keyframe(media)
	f := &l.fanout
	for _, d := range *u.downs.Load() {
		d.forward(l.idx, epoch, h, payload, kf, now, f)
		f.between()
	}
	f.finish()
}

// observeLevel reads the RFC 6464 audio level extension.
func (u *UpTrack) observeLevel(h *rtp.Header) {
	ext := h.GetExtension(u.audioLevelID)
	if len(ext) == 0 {
		return
	}
	level := uint32(ext[0] & 0x7f)
	if level <= speakerThresholdDBov {
		u.loudPackets.Add(1)
	}
	for {
		cur := u.minLevel.Load()
		if level >= cur || u.minLevel.CompareAndSwap(cur, level) {
			return
		}
	}
}

// takeLevel returns and resets the audio level window.
func (u *UpTrack) takeLevel() (loud uint32, minDBov uint32) {
	return u.loudPackets.Swap(0), u.minLevel.Swap(127)
}

// requestKeyframe asks the publisher for a keyframe on layer idx, at most
// once per keyframeInterval.
func (u *UpTrack) requestKeyframe(idx int8) {
	if u.kind != KindVideo || idx < 0 || int(idx) >= maxLayers {
		return
	}
	l := u.layers[idx].Load()
	if l == nil {
		return
	}
	now := time.Now().UnixNano()
	last := l.lastPLI.Load()
	if now-last < int64(keyframeInterval) || !l.lastPLI.CompareAndSwap(last, now) {
		return
	}
	if l.src != nil {
		l.src.RequestKeyframe(l.ssrc)
	}
}

// bestLayer returns the highest live layer not above want, else the lowest
// live one, else -1. A layer is live when it has sent a packet recently.
func (u *UpTrack) bestLayer(want int8, now int64) int8 {
	best, lowest := int8(-1), int8(-1)
	for i := int8(0); i < maxLayers; i++ {
		l := u.layers[i].Load()
		if l == nil || now-l.lastPacket.Load() > int64(layerStale) {
			continue
		}
		if lowest < 0 {
			lowest = i
		}
		if i <= want {
			best = i
		}
	}
	if best < 0 {
		return lowest
	}
	return best
}

// retransmit copies the cached packet seq of layer idx, stored in the
// cache's epoch, into dst.
func (u *UpTrack) retransmit(idx int8, epoch uint32, seq uint16, dst []byte) int {
	if idx < 0 || int(idx) >= maxLayers {
		return 0
	}
	l := u.layers[idx].Load()
	if l == nil || l.cache == nil {
		return 0
	}
	return l.cache.get(seq, epoch, dst)
}

func (u *UpTrack) addDown(d *DownTrack) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := *u.downs.Load()
	next := make([]*DownTrack, 0, len(old)+1)
	next = append(next, old...)
	next = append(next, d)
	u.downs.Store(&next)
}

func (u *UpTrack) removeDown(d *DownTrack) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := *u.downs.Load()
	next := make([]*DownTrack, 0, len(old))
	for _, x := range old {
		if x != d {
			next = append(next, x)
		}
	}
	u.downs.Store(&next)
	if len(next) < len(old) {
		u.pub.room.sfu.retire(d)
	}
}

// downTracks returns the current subscribers.
func (u *UpTrack) downTracks() []*DownTrack { return *u.downs.Load() }

// close ends the track once: the publisher forgets it and every subscriber
// drops its DownTrack.
func (u *UpTrack) close() {
	u.closeOnce.Do(func() {
		close(u.closed)
		u.pub.trackEnded(u)
	})
}

// layerFromRID maps LiveKit's simulcast RIDs to layer indexes
// (livekit/livekit pkg/sfu/buffer/videolayerutils.go RidToSpatialLayer).
func layerFromRID(rid string) int8 {
	switch rid {
	case "q":
		return 0
	case "h":
		return 1
	case "f":
		return 2
	}
	return 0
}

// qualityToLayer maps a requested LiveKit quality to a layer index.
func qualityToLayer(q VideoQuality) int8 {
	switch q {
	case QualityLow:
		return 0
	case QualityMedium:
		return 1
	}
	return 2
}

// DemandMask is the layers the node's subscribers want of the track,
// bit i for layer i: each subscriber that is not paused wants the layer
// it targets (an audio or single-layer track: bit 0). Pinned down tracks
// (a trunk's) do not count: they are what another node wants. Safe from
// any goroutine.
func (u *UpTrack) DemandMask() uint8 {
	var mask uint8
	for _, d := range u.downTracks() {
		d.mu.Lock()
		if !d.paused && d.pinned < 0 {
			target := d.target
			if !u.layered || target < 0 {
				target = 0
			}
			mask |= 1 << target
		}
		d.mu.Unlock()
	}
	return mask
}
