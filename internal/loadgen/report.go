package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// Num is a measurement that may be missing (NaN); JSON writes it as null.
type Num float64

// Missing reports whether n was not measured.
func (n Num) Missing() bool { return math.IsNaN(float64(n)) }

// MarshalJSON writes NaN and infinities as null.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, f, 'g', 6, 64), nil
}

// UnmarshalJSON reads null as NaN.
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = Num(f)
	return nil
}

func nan() Num { return Num(math.NaN()) }

// Report is what one run measured. Window figures cover only the steady
// state; server figures are missing without a server PID.
type Report struct {
	// Label names the server (e.g. "entente") and Scenario the load; the
	// caller sets both for Compare. Run numbers the runs of a scenario, so
	// that Compare can pair the two servers' runs made back to back.
	Label    string `json:"label,omitempty"`
	Scenario string `json:"scenario,omitempty"`
	Run      int    `json:"run,omitempty"`
	URL      string `json:"url"`
	// URLB is the second node in two-node mode (subscribers joined it).
	URLB        string `json:"url_b,omitempty"`
	Publishers  int    `json:"publishers"`
	Subscribers int    `json:"subscribers"`
	Audio       bool   `json:"audio"`
	Video       bool   `json:"video"`
	Simulcast   bool   `json:"simulcast"`

	Participants int `json:"participants"`
	// Connected is how many joined within the connect timeout.
	Connected       int      `json:"connected"`
	ConnectFailures []string `json:"connect_failures,omitempty"`
	// AllMedia is true when every subscriber received every track before the window.
	AllMedia     bool `json:"all_media"`
	SetupSeconds Num  `json:"setup_seconds"`

	WindowSeconds    Num    `json:"window_seconds"`
	ForwardedPackets uint64 `json:"forwarded_packets"`
	PacketsPerSecond Num    `json:"packets_per_second"`

	// The server's (in two-node mode, the first node's) CPU over the
	// window, and per packet the subscribers received.
	ServerCPUSeconds   Num   `json:"server_cpu_seconds"`
	ServerCPUCores     Num   `json:"server_cpu_cores"`
	CPUMicrosPerPacket Num   `json:"cpu_us_per_packet"`
	ServerRSSBaseline  int64 `json:"server_rss_baseline_bytes"`
	ServerRSS          int64 `json:"server_rss_bytes"`
	// RSSPerParticipant is the server's RSS at the window's end over the participants.
	RSSPerParticipant Num `json:"rss_per_participant_bytes"`
	// RSSDeltaPerParticipant subtracts the RSS the server had before anyone joined.
	RSSDeltaPerParticipant Num `json:"rss_delta_per_participant_bytes"`

	JoinSamples int `json:"join_samples"`
	JoinP50Ms   Num `json:"join_p50_ms"`
	JoinP99Ms   Num `json:"join_p99_ms"`
	// FrameSamples subscribers received a video keyframe's first packet;
	// FrameP50Ms and FrameP99Ms are the times from their join to it.
	FrameSamples int `json:"frame_samples"`
	FrameP50Ms   Num `json:"frame_p50_ms"`
	FrameP99Ms   Num `json:"frame_p99_ms"`

	// SourcePackets counts each publication's packets once: per track, the
	// most any subscriber received in the window. In two-node mode that is
	// what crossed the trunk (one copy per track, at the layer the
	// subscribers watch); on one node, what the publishers' tracks carried
	// to the subscribers.
	SourcePackets uint64 `json:"source_packets"`
	// CPUMicrosPerSourcePacket is the first node's CPU per source packet:
	// in two-node mode, per packet it forwarded over the trunk.
	CPUMicrosPerSourcePacket Num `json:"cpu_us_per_source_packet"`
	// The second node's figures (two-node mode): CPU per packet it
	// delivered to its subscribers, and both nodes' CPU per delivered packet.
	ServerBCPUSeconds      Num   `json:"server_b_cpu_seconds"`
	ServerBCPUCores        Num   `json:"server_b_cpu_cores"`
	CPUMicrosPerPacketB    Num   `json:"cpu_us_per_packet_b"`
	CPUMicrosPerPacketBoth Num   `json:"cpu_us_per_packet_both"`
	ServerBRSSBaseline     int64 `json:"server_b_rss_baseline_bytes,omitempty"`
	ServerBRSS             int64 `json:"server_b_rss_bytes,omitempty"`

	Tracks          int    `json:"tracks"`
	ExpectedPackets uint64 `json:"expected_packets"`
	LostPackets     uint64 `json:"lost_packets"`
	LossPercent     Num    `json:"loss_percent"`
	DelaySamples    uint64 `json:"delay_samples"`
	BadStamps       uint64 `json:"bad_stamps"`
	DelayP50Ms      Num    `json:"delay_p50_ms"`
	DelayP99Ms      Num    `json:"delay_p99_ms"`

	GeneratorCPUSeconds Num `json:"generator_cpu_seconds"`
	GeneratorCPUCores   Num `json:"generator_cpu_cores"`
	// GeneratorLimited is set when the generator used most of a core: the
	// server may have been fed less than the scenario asks.
	GeneratorLimited bool `json:"generator_limited"`
	Cores            int  `json:"cores"`
	// MachineCPUCores is the whole machine's busy CPU over the window;
	// OtherCPUCores is what neither the server nor the generator used.
	MachineCPUCores Num `json:"machine_cpu_cores"`
	OtherCPUCores   Num `json:"other_cpu_cores"`
	// Saturated is set when the machine's cores were nearly all busy.
	Saturated bool `json:"saturated"`
}

// Thresholds for the report's flags.
const (
	generatorLimitCores = 0.85
	saturatedFraction   = 0.92
)

func (r *run) report(baseline procSample, start, end snap, setup time.Duration, allMedia bool) *Report {
	c := r.cfg
	window := end.at.Sub(start.at).Seconds()
	rep := &Report{
		URL: c.URL, URLB: c.URLB, Publishers: c.Publishers, Subscribers: c.Subscribers,
		Audio: c.Audio, Video: c.Video, Simulcast: c.Simulcast,
		Participants: c.Participants(), AllMedia: allMedia,
		SetupSeconds: Num(setup.Seconds()), WindowSeconds: Num(window),
		ServerCPUSeconds: nan(), ServerCPUCores: nan(), CPUMicrosPerPacket: nan(),
		RSSPerParticipant: nan(), RSSDeltaPerParticipant: nan(),
		CPUMicrosPerSourcePacket: nan(), ServerBCPUSeconds: nan(), ServerBCPUCores: nan(),
		CPUMicrosPerPacketB: nan(), CPUMicrosPerPacketBoth: nan(),
		Cores: numCPU(),
	}
	r.mu.Lock()
	rep.ConnectFailures = append(rep.ConnectFailures, r.failures[:min(len(r.failures), 10)]...)
	r.mu.Unlock()

	var joins, frames []time.Duration
	var delay histogram
	perTrack := map[string]uint64{} // the most packets any subscriber got of a track
	anyPure := c.Subscribers > 0
	ps := r.connected()
	rep.Connected = len(ps)
	for _, p := range ps {
		if first := p.firstMedia.Load(); first != 0 && p.subscribes && (!anyPure || !p.publisher) {
			joins = append(joins, time.Unix(0, first).Sub(p.start))
		}
		if first := p.firstFrame.Load(); first != 0 && p.subscribes && (!anyPure || !p.publisher) {
			frames = append(frames, time.Unix(0, first).Sub(p.start))
		}
		p.mu.Lock()
		tracks := append([]*trackStats(nil), p.tracks...)
		p.mu.Unlock()
		for _, t := range tracks {
			t.mu.Lock()
			exp, got := t.loss()
			if t.started {
				rep.Tracks++
			}
			rep.ForwardedPackets += t.packets
			rep.ExpectedPackets += exp
			if exp > got {
				rep.LostPackets += exp - got
			}
			rep.BadStamps += t.badStamp
			perTrack[t.track] = max(perTrack[t.track], t.packets)
			delay.merge(&t.delay)
			t.mu.Unlock()
		}
	}
	rep.JoinSamples = len(joins)
	p50, p99 := percentiles(joins)
	rep.JoinP50Ms, rep.JoinP99Ms = Num(p50), Num(p99)
	rep.FrameSamples = len(frames)
	p50, p99 = percentiles(frames)
	rep.FrameP50Ms, rep.FrameP99Ms = Num(p50), Num(p99)
	for _, n := range perTrack {
		rep.SourcePackets += n
	}
	rep.DelaySamples = delay.n
	rep.DelayP50Ms, rep.DelayP99Ms = Num(delay.quantile(0.50)), Num(delay.quantile(0.99))
	rep.LossPercent = nan()
	if rep.ExpectedPackets > 0 {
		rep.LossPercent = Num(100 * float64(rep.LostPackets) / float64(rep.ExpectedPackets))
	}
	rep.PacketsPerSecond = Num(float64(rep.ForwardedPackets) / window)

	gen := (end.self.cpu - start.self.cpu).Seconds()
	rep.GeneratorCPUSeconds, rep.GeneratorCPUCores = Num(gen), Num(gen/window)
	rep.GeneratorLimited = gen/window >= generatorLimitCores
	machine := (end.machine.busy - start.machine.busy).Seconds()
	rep.MachineCPUCores = Num(machine / window)
	rep.Saturated = machine/window >= saturatedFraction*float64(rep.Cores)
	other := machine - gen
	if c.ServerPID > 0 {
		srv := (end.server.cpu - start.server.cpu).Seconds()
		rep.ServerCPUSeconds, rep.ServerCPUCores = Num(srv), Num(srv/window)
		if rep.ForwardedPackets > 0 {
			rep.CPUMicrosPerPacket = Num(srv * 1e6 / float64(rep.ForwardedPackets))
		}
		if rep.SourcePackets > 0 {
			rep.CPUMicrosPerSourcePacket = Num(srv * 1e6 / float64(rep.SourcePackets))
		}
		rep.ServerRSSBaseline, rep.ServerRSS = baseline.rss, end.server.rss
		rep.RSSPerParticipant = Num(float64(end.server.rss) / float64(rep.Participants))
		rep.RSSDeltaPerParticipant = Num(float64(end.server.rss-baseline.rss) / float64(rep.Participants))
		other -= srv
	}
	if c.ServerPIDB > 0 {
		srvB := (end.serverB.cpu - start.serverB.cpu).Seconds()
		rep.ServerBCPUSeconds, rep.ServerBCPUCores = Num(srvB), Num(srvB/window)
		rep.ServerBRSS = end.serverB.rss
		if rep.ForwardedPackets > 0 {
			rep.CPUMicrosPerPacketB = Num(srvB * 1e6 / float64(rep.ForwardedPackets))
			if c.ServerPID > 0 {
				rep.CPUMicrosPerPacketBoth = Num((srvB + float64(rep.ServerCPUSeconds)) * 1e6 / float64(rep.ForwardedPackets))
			}
		}
		other -= srvB
	}
	rep.OtherCPUCores = Num(max(other, 0) / window)
	return rep
}

// WriteText writes the report for a person to read.
func (rep *Report) WriteText(w io.Writer) error {
	f := func(n Num, prec int) string {
		if n.Missing() {
			return "n/a"
		}
		return strconv.FormatFloat(float64(n), 'f', prec, 64)
	}
	mb := func(n Num) string {
		if n.Missing() {
			return "n/a"
		}
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 2, 64) + " MiB"
	}
	media := []string{}
	if rep.Audio {
		media = append(media, "audio")
	}
	if rep.Video {
		v := "video"
		if rep.Simulcast {
			v += " (simulcast)"
		}
		media = append(media, v)
	}
	lines := []string{
		fmt.Sprintf("load:               %d publishers x %d subscribers, %v, %s", rep.Publishers, rep.Subscribers, media, rep.URL),
		fmt.Sprintf("connected:          %d of %d (all media before window: %v, setup %s s)", rep.Connected, rep.Participants, rep.AllMedia, f(rep.SetupSeconds, 1)),
		fmt.Sprintf("window:             %s s, %d packets forwarded, %s packets/s, %d tracks", f(rep.WindowSeconds, 1), rep.ForwardedPackets, f(rep.PacketsPerSecond, 0), rep.Tracks),
		fmt.Sprintf("server CPU:         %s s (%s cores), %s us per forwarded packet", f(rep.ServerCPUSeconds, 2), f(rep.ServerCPUCores, 2), f(rep.CPUMicrosPerPacket, 2)),
		fmt.Sprintf("server RSS:         %s (%s before joins), %s per participant (%s above baseline)", mb(Num(rep.ServerRSS)), mb(Num(rep.ServerRSSBaseline)), mb(rep.RSSPerParticipant), mb(rep.RSSDeltaPerParticipant)),
		fmt.Sprintf("join to 1st media:  p50 %s ms, p99 %s ms (%d subscribers)", f(rep.JoinP50Ms, 0), f(rep.JoinP99Ms, 0), rep.JoinSamples),
		fmt.Sprintf("join to 1st frame:  p50 %s ms, p99 %s ms (%d subscribers, first video keyframe)", f(rep.FrameP50Ms, 0), f(rep.FrameP99Ms, 0), rep.FrameSamples),
		fmt.Sprintf("loss:               %s %% (%d of %d)", f(rep.LossPercent, 3), rep.LostPackets, rep.ExpectedPackets),
		fmt.Sprintf("one-way delay:      p50 %s ms, p99 %s ms (%d samples, %d unreadable)", f(rep.DelayP50Ms, 2), f(rep.DelayP99Ms, 2), rep.DelaySamples, rep.BadStamps),
		fmt.Sprintf("generator CPU:      %s s (%s cores)%s", f(rep.GeneratorCPUSeconds, 2), f(rep.GeneratorCPUCores, 2), flag(rep.GeneratorLimited, " GENERATOR-LIMITED")),
		fmt.Sprintf("machine:            %s of %d cores busy, %s used by others%s", f(rep.MachineCPUCores, 2), rep.Cores, f(rep.OtherCPUCores, 2), flag(rep.Saturated, " SATURATED")),
	}
	if rep.URLB != "" {
		lines = append(lines,
			fmt.Sprintf("two nodes:          publishers on %s, subscribers on %s", rep.URL, rep.URLB),
			fmt.Sprintf("node A (trunk out): %s us per packet sent on the trunk (%d packets)", f(rep.CPUMicrosPerSourcePacket, 2), rep.SourcePackets),
			fmt.Sprintf("node B (trunk in):  %s s (%s cores), %s us per delivered packet", f(rep.ServerBCPUSeconds, 2), f(rep.ServerBCPUCores, 2), f(rep.CPUMicrosPerPacketB, 2)),
			fmt.Sprintf("both nodes:         %s us per delivered packet", f(rep.CPUMicrosPerPacketBoth, 2)))
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	for _, e := range rep.ConnectFailures {
		if _, err := fmt.Fprintln(w, "connect failure:   ", e); err != nil {
			return err
		}
	}
	return nil
}

func flag(on bool, s string) string {
	if on {
		return s
	}
	return ""
}
