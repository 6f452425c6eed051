package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	protologger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"

	"entente.dev/entente/internal/rtpgen"
)

// Config describes one load run.
type Config struct {
	URL       string // ws://127.0.0.1:PORT (loopback only)
	APIKey    string // the server's API key; the generator mints its own tokens
	APISecret string
	Room      string

	// URLB, when set, is a second node federated with the first (two-node
	// mode): publishers join URL, subscribers join URLB, in the same room
	// name, which must be a call both nodes link with a trunk. Tokens for
	// URLB are minted with APIKeyB and APISecretB.
	URLB       string
	APIKeyB    string
	APISecretB string
	// ServerPIDB is the second node's process, read like ServerPID.
	ServerPIDB int
	// IdentityPrefix starts every participant's identity, so that runs
	// made back to back in one room never meet a predecessor's identity.
	IdentityPrefix string

	Publishers  int
	Subscribers int
	// PublishersSubscribe makes publishers subscribe to the others too.
	PublishersSubscribe bool
	Audio               bool // each publisher sends Opus, 50 packets/s
	Video               bool // each publisher sends VP8 at 30 fps
	Simulcast           bool // video in three layers (q, h, f)

	// Warmup is the time between everyone having media and the window.
	Warmup time.Duration
	// Duration is the measurement window.
	Duration time.Duration
	// ServerPID, when non-zero, is the server process whose CPU and memory
	// are read from /proc at the window's start and end.
	ServerPID int

	// ConnectConcurrency bounds simultaneous joins (default 8).
	ConnectConcurrency int
	// ConnectTimeout bounds one join (default 15 s).
	ConnectTimeout time.Duration
	// SetupTimeout bounds connecting everyone and waiting until every
	// subscriber receives every track (default 20 s + 200 ms per participant).
	SetupTimeout time.Duration

	Log zerolog.Logger
}

// TwoNode reports whether subscribers join a second node.
func (c *Config) TwoNode() bool { return c.URLB != "" }

// Participants is the number of participants a run connects.
func (c *Config) Participants() int { return c.Publishers + c.Subscribers }

func (c *Config) withDefaults() Config {
	d := *c
	if d.ConnectConcurrency <= 0 {
		d.ConnectConcurrency = 8
	}
	if d.ConnectTimeout <= 0 {
		d.ConnectTimeout = 15 * time.Second
	}
	if d.SetupTimeout <= 0 {
		d.SetupTimeout = 20*time.Second + time.Duration(d.Participants())*200*time.Millisecond
	}
	return d
}

// Budget is the longest Run can take with this configuration, teardown included.
func (c *Config) Budget() time.Duration {
	d := c.withDefaults()
	return d.SetupTimeout + d.Warmup + d.Duration + 2*teardownTimeout
}

// Validate checks the configuration; every problem is reported at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	if err := CheckLoopback(c.URL); err != nil {
		errs = append(errs, err)
	}
	if c.APIKey == "" || c.APISecret == "" {
		bad("API key and secret are required")
	}
	if c.Room == "" {
		bad("room is required")
	}
	if c.Publishers < 1 {
		bad("publishers must be at least 1")
	}
	if c.Subscribers < 0 {
		bad("subscribers must not be negative")
	}
	if c.Subscribers == 0 && !(c.PublishersSubscribe && c.Publishers > 1) {
		bad("nobody subscribes: add subscribers, or let two or more publishers subscribe")
	}
	if !c.Audio && !c.Video {
		bad("choose audio, video or both")
	}
	if c.Simulcast && !c.Video {
		bad("simulcast needs video")
	}
	if c.Duration <= 0 {
		bad("duration must be positive")
	}
	if c.Warmup < 0 {
		bad("warmup must not be negative")
	}
	if c.ServerPID < 0 || c.ServerPIDB < 0 {
		bad("server pid must not be negative")
	}
	if c.TwoNode() {
		if err := CheckLoopback(c.URLB); err != nil {
			errs = append(errs, err)
		}
		if c.URLB == c.URL {
			bad("the second node's URL is the first's")
		}
		if c.APIKeyB == "" || c.APISecretB == "" {
			bad("the second node's API key and secret are required")
		}
		if c.Subscribers < 1 {
			bad("two-node mode needs subscribers (they join the second node)")
		}
	} else if c.APIKeyB != "" || c.APISecretB != "" || c.ServerPIDB != 0 {
		bad("a second node's key or pid without its URL")
	}
	return errors.Join(errs...)
}

// CheckLoopback accepts ws, wss, http and https URLs whose host is
// "localhost" or a loopback IP address.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotLoopback, err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return fmt.Errorf("%w: scheme %q (want ws or wss)", ErrNotLoopback, u.Scheme)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrNotLoopback, host)
}

const (
	phaseSetup int32 = iota
	phaseWindow
	phaseDone
)

// teardownTimeout bounds disconnecting everyone, and then waiting for the readers.
const teardownTimeout = 15 * time.Second

// participant is one connected SDK client.
type participant struct {
	identity   string
	publisher  bool
	subscribes bool
	room       *lksdk.Room
	remote     bool         // joins the second node (two-node mode)
	start      time.Time    // when its join started
	firstMedia atomic.Int64 // Unix ns of its first media packet, 0 before
	// firstFrame is the Unix ns of the first packet of the first video
	// keyframe it received (where a decoder could show a picture), 0 before.
	firstFrame atomic.Int64
	ready      atomic.Int32 // tracks that delivered at least one packet

	mu     sync.Mutex
	tracks []*trackStats
}

// run is one Run's state. Goroutines it starts: media generators (stopped by
// stopGens), one reader per subscribed track (stopped by disconnecting), and
// joins and disconnects (waited for, bounded by timeouts).
type run struct {
	cfg   Config
	log   zerolog.Logger
	phase atomic.Int32

	genCtx   context.Context
	stopGens context.CancelFunc
	gens     sync.WaitGroup
	readers  sync.WaitGroup

	mu           sync.Mutex
	participants []*participant
	failures     []string
}

// Run connects the publishers, then the subscribers, waits until media
// flows to everyone (or the setup deadline), lets the load settle for
// Warmup, measures for Duration and disconnects everyone. The report is
// returned even when some participants failed to connect; an error means
// nothing could be measured.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &run{cfg: cfg, log: cfg.Log}
	r.genCtx, r.stopGens = context.WithCancel(context.WithoutCancel(ctx))
	defer r.teardown()

	var baseline procSample
	if cfg.ServerPID > 0 {
		var err error
		if baseline, err = readProc(strconv.Itoa(cfg.ServerPID)); err != nil {
			return nil, err
		}
	}
	var baselineB procSample
	if cfg.ServerPIDB > 0 {
		var err error
		if baselineB, err = readProc(strconv.Itoa(cfg.ServerPIDB)); err != nil {
			return nil, err
		}
	}

	setupCtx, cancel := context.WithTimeout(ctx, cfg.SetupTimeout)
	defer cancel()
	setupStart := time.Now()
	r.connectAll(setupCtx)
	allMedia := r.waitMedia(setupCtx)
	setup := time.Since(setupStart)
	if r.withMedia() == 0 {
		return nil, fmt.Errorf("%w after %v (%d of %d participants connected; %v)",
			ErrNoMedia, setup.Round(time.Millisecond), len(r.connected()), cfg.Participants(), r.failureSummary())
	}
	r.log.Info().Dur("setup", setup).Bool("all_media", allMedia).Msg("setup done, warming up")

	if err := sleep(ctx, cfg.Warmup); err != nil {
		return nil, err
	}
	start, err := r.snapshot()
	if err != nil {
		return nil, err
	}
	r.phase.Store(phaseWindow)
	r.log.Info().Dur("duration", cfg.Duration).Msg("measuring")
	if err := sleep(ctx, cfg.Duration); err != nil {
		return nil, err
	}
	r.phase.Store(phaseDone)
	end, err := r.snapshot()
	if err != nil {
		return nil, err
	}
	rep := r.report(baseline, start, end, setup, allMedia)
	rep.ServerBRSSBaseline = baselineB.rss
	return rep, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// connectAll joins the publishers first, so that subscribers find media
// flowing and their time to first packet is the server's join path, then the
// subscribers, at most ConnectConcurrency at a time.
func (r *run) connectAll(ctx context.Context) {
	var pubs, subs []*participant
	for i := range r.cfg.Publishers {
		pubs = append(pubs, &participant{identity: fmt.Sprintf("%spub-%03d", r.cfg.IdentityPrefix, i), publisher: true, subscribes: r.cfg.PublishersSubscribe})
	}
	for i := range r.cfg.Subscribers {
		subs = append(subs, &participant{identity: fmt.Sprintf("%ssub-%03d", r.cfg.IdentityPrefix, i), subscribes: true, remote: r.cfg.TwoNode()})
	}
	for _, group := range [][]*participant{pubs, subs} {
		sem := make(chan struct{}, r.cfg.ConnectConcurrency)
		var wg sync.WaitGroup
		for i, p := range group {
			select {
			case <-ctx.Done():
			case sem <- struct{}{}:
			}
			if ctx.Err() != nil {
				r.fail(p.identity, ctx.Err())
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := r.connect(ctx, p, i); err != nil {
					r.fail(p.identity, err)
				}
			}()
		}
		wg.Wait()
	}
}

func (r *run) fail(identity string, err error) {
	r.log.Warn().Str("participant", identity).Err(err).Msg("participant failed")
	r.mu.Lock()
	r.failures = append(r.failures, identity+": "+err.Error())
	r.mu.Unlock()
}

func (r *run) failureSummary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) == 0 {
		return "no connect errors"
	}
	return fmt.Sprintf("%d failed, first: %s", len(r.failures), r.failures[0])
}

func (r *run) connected() []*participant {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*participant(nil), r.participants...)
}

// node returns the URL and API key pair of the node p joins.
func (r *run) node(p *participant) (addr, key, secret string) {
	if p.remote {
		return r.cfg.URLB, r.cfg.APIKeyB, r.cfg.APISecretB
	}
	return r.cfg.URL, r.cfg.APIKey, r.cfg.APISecret
}

func (r *run) token(key, secret, identity string) (string, error) {
	at := auth.NewAccessToken(key, secret)
	at.SetIdentity(identity).SetName(identity).SetValidFor(time.Hour).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: r.cfg.Room})
	return at.ToJWT()
}

func (r *run) connect(ctx context.Context, p *participant, index int) error {
	addr, key, secret := r.node(p)
	tok, err := r.token(key, secret, p.identity)
	if err != nil {
		return err
	}
	cb := &lksdk.RoomCallback{}
	if p.subscribes {
		cb.ParticipantCallback.OnTrackSubscribed = func(tr *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
			// Under mu, so that no reader is added once teardown waits for them.
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.phase.Load() == phaseDone {
				return
			}
			r.readers.Add(1)
			go r.read(p, tr, pub.SID())
		}
	}
	room := lksdk.NewRoom(cb)
	joinCtx, cancel := context.WithTimeout(ctx, r.cfg.ConnectTimeout)
	defer cancel()
	p.start = time.Now()
	err = room.JoinWithContextAndToken(joinCtx, addr, tok,
		lksdk.WithAutoSubscribe(p.subscribes),
		lksdk.WithConnectTimeout(r.cfg.ConnectTimeout),
		lksdk.WithLogger(protologger.GetDiscardLogger()),
		lksdk.WithDisableRegionDiscovery())
	if err != nil {
		room.Disconnect()
		return fmt.Errorf("join: %w", err)
	}
	p.room = room
	r.mu.Lock()
	r.participants = append(r.participants, p)
	r.mu.Unlock()
	if p.publisher {
		if err := r.publish(p, index); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	return nil
}

// read is the one reader of a subscribed track. Per packet it parses the
// RTP header in place and, inside the window, records sequence and delay:
// no allocation, one uncontended lock.
func (r *run) read(p *participant, tr *webrtc.TrackRemote, trackSID string) {
	defer r.readers.Done()
	st := &trackStats{video: tr.Kind() == webrtc.RTPCodecTypeVideo, track: trackSID}
	p.mu.Lock()
	p.tracks = append(p.tracks, st)
	p.mu.Unlock()
	buf := make([]byte, 1600)
	first := true
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		seq, payload, ok := parseRTP(buf[:n])
		// Media starts with the first packet that carries some: a server
		// may send padding-only packets first (bandwidth probes), which
		// show nothing to the user.
		if first && ok && len(payload) > 0 {
			first = false
			p.firstMedia.CompareAndSwap(0, time.Now().UnixNano())
			p.ready.Add(1)
		}
		if st.video && ok && p.firstFrame.Load() == 0 && rtpgen.IsVP8Keyframe(payload) {
			p.firstFrame.CompareAndSwap(0, time.Now().UnixNano())
		}
		if r.phase.Load() != phaseWindow || !ok {
			continue
		}
		var sent time.Time
		var stamped bool
		if st.video {
			sent, stamped = vp8Stamp(payload)
		} else {
			sent, stamped = rtpgen.SentAt(payload, false)
		}
		now := time.Now()
		if stamped {
			if d := now.Sub(sent); d < -time.Millisecond || d > 10*time.Second {
				sent, stamped = time.Time{}, false
				st.mu.Lock()
				st.badStamp++
				st.mu.Unlock()
			}
		}
		st.record(seq, sent, now)
	}
}

// Media parameters: Opus at 50 packets/s; VP8 at 30 fps in packets of at
// most 1100 payload bytes, a keyframe on every PLI and at least every 10 s.
const (
	opusBytes = 90
	vp8MTU    = 1100
	fps       = 30
	keyEvery  = 300
)

// videoLayer is one simulcast layer's size and frame sizes.
type videoLayer struct {
	quality         livekit.VideoQuality
	w, h            uint32
	delta, keyframe int
}

// simulcastLayers are the layers, low to high: about 150 kbit/s, 400 kbit/s
// and 1.1 Mbit/s. A single-layer publisher sends about 650 kbit/s, 3 packets
// per frame.
func simulcastLayers() []videoLayer {
	return []videoLayer{
		{livekit.VideoQuality_LOW, 320, 180, 600, 2400},
		{livekit.VideoQuality_MEDIUM, 640, 360, 1600, 6400},
		{livekit.VideoQuality_HIGH, 1280, 720, 4400, 17600},
	}
}

const singleDelta, singleKey = 2700, 11000

func (r *run) publish(p *participant, index int) error {
	lp := p.room.LocalParticipant
	if r.cfg.Audio {
		tr, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
		if err != nil {
			return err
		}
		if _, err := lp.PublishTrack(tr, &lksdk.TrackPublicationOptions{Name: "mic", Source: livekit.TrackSource_MICROPHONE}); err != nil {
			return err
		}
		// The first publisher speaks; the others send quiet room noise.
		level := uint8(90)
		if index == 0 {
			level = 20
		}
		r.gens.Add(1)
		go r.sendAudio(tr, level)
	}
	if !r.cfg.Video {
		return nil
	}
	newVideo := func(g *rtpgen.VP8, opts ...lksdk.LocalTrackOptions) (*lksdk.LocalTrack, error) {
		opts = append(opts, lksdk.WithRTCPHandler(func(pkt rtcp.Packet) {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				g.RequestKeyframe()
			}
		}))
		return lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, opts...)
	}
	if !r.cfg.Simulcast {
		g := &rtpgen.VP8{FPS: fps, FrameBytes: singleDelta, KeyframeBytes: singleKey, KeyframeEvery: keyEvery, MTU: vp8MTU}
		tr, err := newVideo(g)
		if err != nil {
			return err
		}
		if _, err := lp.PublishTrack(tr, &lksdk.TrackPublicationOptions{Name: "camera", Source: livekit.TrackSource_CAMERA, VideoWidth: 640, VideoHeight: 360}); err != nil {
			return err
		}
		r.gens.Add(1)
		go r.sendVideo(tr, g)
		return nil
	}
	var tracks []*lksdk.LocalTrack
	var gens []*rtpgen.VP8
	for _, l := range simulcastLayers() {
		g := &rtpgen.VP8{FPS: fps, FrameBytes: l.delta, KeyframeBytes: l.keyframe, KeyframeEvery: keyEvery, MTU: vp8MTU}
		tr, err := newVideo(g, lksdk.WithSimulcast("camera", &livekit.VideoLayer{Quality: l.quality, Width: l.w, Height: l.h}))
		if err != nil {
			return err
		}
		tracks, gens = append(tracks, tr), append(gens, g)
	}
	if _, err := lp.PublishSimulcastTrack(tracks, &lksdk.TrackPublicationOptions{Name: "camera", Source: livekit.TrackSource_CAMERA, VideoWidth: 1280, VideoHeight: 720}); err != nil {
		return err
	}
	for i := range tracks {
		r.gens.Add(1)
		go r.sendVideo(tracks[i], gens[i])
	}
	return nil
}

func (r *run) sendAudio(tr *lksdk.LocalTrack, level uint8) {
	defer r.gens.Done()
	g := &rtpgen.Opus{Bytes: opusBytes}
	tick := time.NewTicker(g.Interval())
	defer tick.Stop()
	opts := &lksdk.SampleWriteOptions{AudioLevel: &level}
	for {
		select {
		case <-r.genCtx.Done():
			return
		case now := <-tick.C:
			_ = tr.WriteRTP(g.Next(now), opts)
		}
	}
}

func (r *run) sendVideo(tr *lksdk.LocalTrack, g *rtpgen.VP8) {
	defer r.gens.Done()
	tick := time.NewTicker(g.Interval())
	defer tick.Stop()
	for {
		select {
		case <-r.genCtx.Done():
			return
		case now := <-tick.C:
			for _, p := range g.NextFrame(now) {
				_ = tr.WriteRTP(p, nil)
			}
		}
	}
}

// expectedTracks is how many tracks participant p should receive.
func (r *run) expectedTracks(p *participant) int {
	if !p.subscribes {
		return 0
	}
	per := 0
	if r.cfg.Audio {
		per++
	}
	if r.cfg.Video {
		per++
	}
	others := r.cfg.Publishers
	if p.publisher {
		others--
	}
	return per * others
}

// waitMedia waits until every subscriber receives every track it should;
// false when the setup deadline came first.
func (r *run) waitMedia(ctx context.Context) bool {
	lastLog := time.Now()
	for {
		// connectAll has returned: who is not connected by now never will be.
		ps := r.connected()
		waiting := 0
		for _, p := range ps {
			if int(p.ready.Load()) < r.expectedTracks(p) {
				waiting++
			}
		}
		if waiting == 0 {
			return true
		}
		if time.Since(lastLog) >= 2*time.Second {
			lastLog = time.Now()
			r.log.Info().Int("waiting", waiting).Int("connected", len(ps)).Msg("waiting for media to reach everyone")
		}
		if sleep(ctx, 100*time.Millisecond) != nil {
			return false
		}
	}
}

func (r *run) withMedia() int {
	n := 0
	for _, p := range r.connected() {
		if p.firstMedia.Load() != 0 {
			n++
		}
	}
	return n
}

// snap is one reading taken at a window edge.
type snap struct {
	at      time.Time
	server  procSample
	serverB procSample
	self    procSample
	machine machineSample
}

func (r *run) snapshot() (snap, error) {
	s := snap{at: time.Now()}
	var err error
	if r.cfg.ServerPID > 0 {
		if s.server, err = readProc(strconv.Itoa(r.cfg.ServerPID)); err != nil {
			return s, err
		}
	}
	if r.cfg.ServerPIDB > 0 {
		if s.serverB, err = readProc(strconv.Itoa(r.cfg.ServerPIDB)); err != nil {
			return s, err
		}
	}
	if s.self, err = readProc("self"); err != nil {
		return s, err
	}
	if s.machine, err = readMachine(); err != nil {
		return s, err
	}
	return s, nil
}

// teardown stops the generators, disconnects everyone (in parallel,
// bounded) and waits for the readers, each step at most teardownTimeout.
func (r *run) teardown() {
	r.mu.Lock()
	r.phase.Store(phaseDone)
	r.mu.Unlock()
	r.stopGens()
	r.gens.Wait()
	ps := r.connected()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p.room.Disconnect()
		}()
	}
	if !waitTimeout(&wg, teardownTimeout) {
		r.log.Warn().Msg("some participants did not disconnect in time")
		return
	}
	if !waitTimeout(&r.readers, teardownTimeout) {
		r.log.Warn().Msg("some track readers did not stop in time")
	}
}

// waitTimeout waits for wg, at most d; the helper goroutine ends with wg.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// numCPU is the machine's core count, for the busy-machine check.
func numCPU() int { return runtime.NumCPU() }
