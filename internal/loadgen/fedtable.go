package loadgen

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// FederationOptions choose how FederationTable judges runs.
type FederationOptions struct {
	// Local labels the reference runs (everyone on node A) and Remote the
	// two-node runs (publishers on A, subscribers on B); default "local"
	// and "remote".
	Local, Remote string
	// BusyCores is how much CPU others may use during a window (in cores)
	// before the run is refused as disturbed; default 0.3.
	BusyCores float64
	// IncludeBusy reports disturbed runs too, marked, instead of refusing them.
	IncludeBusy bool
}

// fedMetric is one row of the federation table: the figure of a local run
// and the matching figure of a two-node run, compared as a difference
// (timings) or a ratio (costs).
type fedMetric struct {
	name   string
	prec   int
	ratio  bool
	local  func(*Report) Num
	remote func(*Report) Num
}

func fedMetrics() []fedMetric {
	// same compares one figure of both runs.
	same := func(name string, prec int, get func(*Report) Num) fedMetric {
		return fedMetric{name: name, prec: prec, local: get, remote: get}
	}
	return []fedMetric{
		same("one-way delay p50 ms", 2, func(r *Report) Num { return r.DelayP50Ms }),
		same("one-way delay p99 ms", 2, func(r *Report) Num { return r.DelayP99Ms }),
		same("join to first frame p50 ms", 0, func(r *Report) Num { return r.FrameP50Ms }),
		same("join to first frame p99 ms", 0, func(r *Report) Num { return r.FrameP99Ms }),
		same("join to first media p50 ms", 0, func(r *Report) Num { return r.JoinP50Ms }),
		// Node A forwards each packet to the subscribers (local) or once
		// over the trunk (remote); both include receiving it.
		{name: "A: CPU us per packet forwarded (local: to a subscriber; remote: on the trunk)", prec: 2, ratio: true,
			local:  func(r *Report) Num { return r.CPUMicrosPerPacket },
			remote: func(r *Report) Num { return r.CPUMicrosPerSourcePacket }},
		// Node B, remote, does what A does locally: one stream in, fanned
		// out to the subscribers; only its source is the trunk.
		{name: "fan-out node: CPU us per delivered packet (local: A; remote: B)", prec: 2, ratio: true,
			local:  func(r *Report) Num { return r.CPUMicrosPerPacket },
			remote: func(r *Report) Num { return r.CPUMicrosPerPacketB }},
		{name: "all nodes: CPU us per delivered packet (local: A; remote: A+B)", prec: 2, ratio: true,
			local:  func(r *Report) Num { return r.CPUMicrosPerPacket },
			remote: func(r *Report) Num { return r.CPUMicrosPerPacketBoth }},
		same("loss %", 3, func(r *Report) Num { return r.LossPercent }),
		{name: "delivered pkts/s", ratio: true,
			local:  func(r *Report) Num { return r.PacketsPerSecond },
			remote: func(r *Report) Num { return r.PacketsPerSecond }},
	}
}

// FederationTable writes a Markdown table per scenario: the median over
// runs of the local reference and of the two-node runs, each with its
// range, and the median (with range) of the per-run difference remote -
// local for timings, or ratio remote / local for costs, pairing the runs
// with the same number. Disturbed runs are refused unless IncludeBusy.
func FederationTable(w io.Writer, reports []*Report, o FederationOptions) error {
	if o.Local == "" {
		o.Local = "local"
	}
	if o.Remote == "" {
		o.Remote = "remote"
	}
	if o.BusyCores <= 0 {
		o.BusyCores = 0.3
	}
	var scenarios []string
	type key struct {
		scenario string
		run      int
	}
	local, remote := map[key]*Report{}, map[key]*Report{}
	refused := map[string]int{}
	for _, r := range reports {
		var into map[key]*Report
		switch r.Label {
		case o.Local:
			into = local
		case o.Remote:
			into = remote
		default:
			continue
		}
		if !slices.Contains(scenarios, r.Scenario) {
			scenarios = append(scenarios, r.Scenario)
		}
		if !o.IncludeBusy && float64(r.OtherCPUCores) > o.BusyCores {
			refused[r.Scenario]++
			continue
		}
		into[key{r.Scenario, r.Run}] = r
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | figure | %s (median, range) | %s (median, range) | %s vs %s per run pair (median, range) |\n", o.Local, o.Remote, o.Remote, o.Local)
	b.WriteString("| --- | --- | ---: | ---: | ---: |\n")
	for _, sc := range scenarios {
		var runs []int
		for k := range local {
			if k.scenario == sc {
				runs = append(runs, k.run)
			}
		}
		for k := range remote {
			if k.scenario == sc && !slices.Contains(runs, k.run) {
				runs = append(runs, k.run)
			}
		}
		slices.Sort(runs)
		for _, m := range fedMetrics() {
			var ls, rs, cmp []float64
			for _, run := range runs {
				l, r := local[key{sc, run}], remote[key{sc, run}]
				lv, rv := math.NaN(), math.NaN()
				if l != nil && !m.local(l).Missing() {
					lv = float64(m.local(l))
					ls = append(ls, lv)
				}
				if r != nil && !m.remote(r).Missing() {
					rv = float64(m.remote(r))
					rs = append(rs, rv)
				}
				if math.IsNaN(lv) || math.IsNaN(rv) {
					continue
				}
				if m.ratio {
					if lv > 0 {
						cmp = append(cmp, rv/lv)
					}
				} else {
					cmp = append(cmp, rv-lv)
				}
			}
			cmpPrec, unit := m.prec, ""
			if m.ratio {
				cmpPrec, unit = 2, "x"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", sc, m.name,
				spread(ls, m.prec, ""), spread(rs, m.prec, ""), spread(cmp, cmpPrec, unit))
		}
	}
	for _, sc := range scenarios {
		if n := refused[sc]; n > 0 {
			fmt.Fprintf(&b, "\n%s: %d disturbed run(s) refused (others used more than %.2f cores)\n", sc, n, o.BusyCores)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// spread formats the median of xs with its range and count:
// "1.20 (1.10-1.40, n=3)"; "n/a" when xs is empty.
func spread(xs []float64, prec int, unit string) string {
	if len(xs) == 0 {
		return "n/a"
	}
	m := fmtNum(median(xs), prec) + unit
	if len(xs) == 1 {
		return m + " (n=1)"
	}
	return fmt.Sprintf("%s (%s to %s, n=%d)", m, fmtNum(slices.Min(xs), prec), fmtNum(slices.Max(xs), prec), len(xs))
}
