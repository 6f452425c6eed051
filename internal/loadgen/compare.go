package loadgen

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// CompareOptions choose how Compare judges runs.
type CompareOptions struct {
	// A and B are the two servers' labels; ratios are A/B.
	A, B string
	// BusyCores is how much CPU others may use during a window (in cores)
	// before the run is refused as disturbed; default 0.3.
	BusyCores float64
	// IncludeBusy reports disturbed runs too, marked, instead of refusing them.
	IncludeBusy bool
}

// metric is one row of the comparison table.
type metric struct {
	name  string
	prec  int
	scale float64
	get   func(*Report) Num
}

func compareMetrics() []metric {
	return []metric{
		{"CPU us/packet", 2, 1, func(r *Report) Num { return r.CPUMicrosPerPacket }},
		{"RSS/participant MiB", 2, 1.0 / (1 << 20), func(r *Report) Num { return r.RSSPerParticipant }},
		{"RSS above idle/participant MiB", 2, 1.0 / (1 << 20), func(r *Report) Num { return r.RSSDeltaPerParticipant }},
		{"failed joins", 0, 1, func(r *Report) Num { return Num(r.Participants - r.Connected) }},
		{"join p50 ms", 0, 1, func(r *Report) Num { return r.JoinP50Ms }},
		{"join p99 ms", 0, 1, func(r *Report) Num { return r.JoinP99Ms }},
		{"loss %", 3, 1, func(r *Report) Num { return r.LossPercent }},
		{"delay p50 ms", 2, 1, func(r *Report) Num { return r.DelayP50Ms }},
		{"delay p99 ms", 2, 1, func(r *Report) Num { return r.DelayP99Ms }},
		{"forwarded pkts/s", 0, 1, func(r *Report) Num { return r.PacketsPerSecond }},
		{"server CPU cores", 2, 1, func(r *Report) Num { return r.ServerCPUCores }},
		{"generator CPU cores", 2, 1, func(r *Report) Num { return r.GeneratorCPUCores }},
	}
}

// Compare writes a Markdown table of the medians of each scenario's runs for
// servers A and B, with A/B ratios. Runs whose window saw other work on the
// machine are refused (and counted) unless IncludeBusy; where the generator
// was the limit or the machine was saturated, the cell is marked.
func Compare(w io.Writer, reports []*Report, o CompareOptions) error {
	if o.BusyCores <= 0 {
		o.BusyCores = 0.3
	}
	var scenarios []string
	byKey := map[string][]*Report{}
	for _, r := range reports {
		if !slices.Contains(scenarios, r.Scenario) {
			scenarios = append(scenarios, r.Scenario)
		}
		k := r.Scenario + "\x00" + r.Label
		byKey[k] = append(byKey[k], r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | metric | %s | %s | %s/%s |\n|---|---|---:|---:|---:|\n", o.A, o.B, o.A, o.B)
	var notes []string
	for _, sc := range scenarios {
		type side struct {
			ok                []*Report
			busy, total       int
			genLimited, satur bool
			incomplete        bool
			maxOther          float64
		}
		sides := map[string]*side{}
		for _, label := range []string{o.A, o.B} {
			s := &side{}
			for _, r := range byKey[sc+"\x00"+label] {
				s.total++
				other := float64(r.OtherCPUCores)
				if !r.OtherCPUCores.Missing() && other > o.BusyCores {
					s.busy++
					s.maxOther = max(s.maxOther, other)
					if !o.IncludeBusy {
						continue
					}
				}
				s.ok = append(s.ok, r)
				s.genLimited = s.genLimited || r.GeneratorLimited
				s.satur = s.satur || r.Saturated
				s.incomplete = s.incomplete || !r.AllMedia || r.Connected < r.Participants
			}
			sides[label] = s
		}
		for i, m := range compareMetrics() {
			name := ""
			if i == 0 {
				name = sc
			}
			cells := map[string]string{}
			vals := map[string]float64{}
			for _, label := range []string{o.A, o.B} {
				s := sides[label]
				if len(s.ok) == 0 {
					if s.total == 0 {
						cells[label] = "no runs"
					} else {
						cells[label] = fmt.Sprintf("busy (%d/%d runs)", s.busy, s.total)
					}
					vals[label] = math.NaN()
					continue
				}
				var xs []float64
				for _, r := range s.ok {
					if v := m.get(r); !v.Missing() {
						xs = append(xs, float64(v)*m.scale)
					}
				}
				v := median(xs)
				vals[label] = v
				cells[label] = fmtNum(v, m.prec) + marks(s.genLimited, s.satur, s.incomplete, o.IncludeBusy && s.busy > 0)
			}
			ratio := "n/a"
			if a, bv := vals[o.A], vals[o.B]; !math.IsNaN(a) && !math.IsNaN(bv) && bv != 0 {
				ratio = strconv.FormatFloat(a/bv, 'f', 2, 64)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", name, m.name, cells[o.A], cells[o.B], ratio)
		}
		for _, label := range []string{o.A, o.B} {
			s := sides[label]
			if s.busy > 0 {
				verb := "refused"
				if o.IncludeBusy {
					verb = "kept, marked !"
				}
				notes = append(notes, fmt.Sprintf("%s, %s: %d of %d runs had other work on the machine (up to %.2f cores > %.2f): %s",
					sc, label, s.busy, s.total, s.maxOther, o.BusyCores, verb))
			}
		}
	}
	b.WriteString("\nMarks: G = the load generator used most of a core (it may be the limit); S = the machine's cores were saturated;\n" +
		"i = some participant did not connect or receive every track before the window; ! = the machine had other work.\n" +
		"Medians of the accepted runs; RSS is the server's resident memory at the window's end over all participants.\n")
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
	writePairs(&b, scenarios, byKey, o)
	_, err := io.WriteString(w, b.String())
	return err
}

// writePairs adds, for CPU per packet, the ratio of each pair of runs made
// back to back (same run number, both accepted) and their median. The
// machine's speed drifts from minute to minute; a pair shares the minute,
// so the median of pair ratios is steadier than the ratio of medians.
func writePairs(b *strings.Builder, scenarios []string, byKey map[string][]*Report, o CompareOptions) {
	accepted := func(r *Report) bool {
		return o.IncludeBusy || r.OtherCPUCores.Missing() || float64(r.OtherCPUCores) <= o.BusyCores
	}
	var rows []string
	for _, sc := range scenarios {
		bRuns := map[int]*Report{}
		for _, r := range byKey[sc+"\x00"+o.B] {
			if r.Run > 0 && accepted(r) {
				bRuns[r.Run] = r
			}
		}
		var ratios []float64
		var cells []string
		for _, a := range byKey[sc+"\x00"+o.A] {
			bv, ok := bRuns[a.Run]
			if a.Run == 0 || !ok || !accepted(a) || a.CPUMicrosPerPacket.Missing() || bv.CPUMicrosPerPacket.Missing() || bv.CPUMicrosPerPacket == 0 {
				continue
			}
			x := float64(a.CPUMicrosPerPacket) / float64(bv.CPUMicrosPerPacket)
			ratios = append(ratios, x)
			cells = append(cells, fmt.Sprintf("%d: %.2f", a.Run, x))
		}
		if len(ratios) > 0 {
			rows = append(rows, fmt.Sprintf("| %s | %s | %.2f |\n", sc, strings.Join(cells, ", "), median(ratios)))
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "\nCPU us/packet, %s/%s per pair of runs made back to back:\n\n| scenario | run: ratio | median |\n|---|---|---:|\n", o.A, o.B)
	for _, r := range rows {
		b.WriteString(r)
	}
}

func marks(gen, sat, incomplete, busy bool) string {
	m := ""
	if gen {
		m += "G"
	}
	if sat {
		m += "S"
	}
	if incomplete {
		m += "i"
	}
	if busy {
		m += "!"
	}
	if m != "" {
		return " " + m
	}
	return ""
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtNum(v float64, prec int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}
