package rtc

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// trunkOffer is a real trunk's first offer: its data channels and one
// receive slot of each kind.
func trunkOffer(tb testing.TB, e *Engine) string {
	tb.Helper()
	pump := newTrunkPump("offerer")
	defer pump.close()
	descs := make(chan string, 1)
	tr, err := e.NewTrunk(true, &describer{trunkPump: pump, descs: descs}, zerolog.Nop())
	require.NoError(tb, err)
	defer tr.Close()
	require.NoError(tb, tr.Start())
	select {
	case s := <-descs:
		return s
	case <-time.After(5 * time.Second):
		tb.Fatal("no offer")
	}
	return ""
}

// describer records the first description instead of sending it.
type describer struct {
	*trunkPump
	descs chan string
}

func (d *describer) SendDescription(_, sdp string) { d.descs <- sdp }

// checkTrunkDescription hands a description to a fresh trunk of the role
// that takes it and checks that a refusal is one of the documented
// errors. It must never panic.
func checkTrunkDescription(t *testing.T, e *Engine, typ, sdp string) {
	pump := newTrunkPump("fuzz")
	defer pump.close()
	offerer := typ == "answer"
	tr, err := e.NewTrunk(offerer, pump, zerolog.Nop())
	require.NoError(t, err)
	defer tr.Close()
	if offerer {
		require.NoError(t, tr.Start())
	}
	err = tr.HandleDescription(typ, sdp)
	if err != nil && !errors.Is(err, media.ErrInvalidSDP) && !errors.Is(err, ErrTrunkState) {
		t.Fatalf("%s refused with an undocumented error: %v", typ, err)
	}
}

// TestTrunkRefusesBadDescriptions: descriptions that are too large, of
// the wrong type for the role, not SDP, or media sections without a mid
// are refused with media.ErrInvalidSDP or ErrTrunkState; a second first
// description is refused; a real offer is answered.
func TestTrunkRefusesBadDescriptions(t *testing.T) {
	e := newTestEngine(t)
	offer := trunkOffer(t, e)
	for _, c := range []struct {
		name, typ, sdp string
		want           error
	}{
		{"empty", "offer", "", media.ErrInvalidSDP},
		{"not sdp", "offer", "hello", media.ErrInvalidSDP},
		{"too large", "offer", offer + strings.Repeat("a=x\r\n", MaxTrunkDescription/5), media.ErrInvalidSDP},
		{"wrong type", "pranswer", offer, ErrTrunkState},
		{"a section without a mid", "offer", strings.Replace(offer, "a=mid:0", "a=foo:0", 1), media.ErrInvalidSDP},
		{"chrome's publisher offer", "offer", chromeOffer(), nil},
		{"a trunk's offer", "offer", offer, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			pump := newTrunkPump("answerer")
			defer pump.close()
			tr, err := e.NewTrunk(false, pump, zerolog.Nop())
			require.NoError(t, err)
			defer tr.Close()
			err = tr.HandleDescription(c.typ, c.sdp)
			if c.want == nil {
				require.NoError(t, err)
				require.ErrorIs(t, tr.HandleDescription(c.typ, c.sdp), ErrTrunkState, "a second first description")
				return
			}
			require.ErrorIs(t, err, c.want)
		})
	}
	t.Run("an offer as the answer", func(t *testing.T) {
		checkTrunkDescription(t, e, "answer", offer)
	})
	t.Run("an offer to the offerer", func(t *testing.T) {
		pump := newTrunkPump("offerer")
		defer pump.close()
		tr, err := e.NewTrunk(true, pump, zerolog.Nop())
		require.NoError(t, err)
		defer tr.Close()
		require.NoError(t, tr.Start())
		require.ErrorIs(t, tr.HandleDescription("offer", offer), ErrTrunkState)
	})
	t.Run("candidates", func(t *testing.T) {
		pump := newTrunkPump("answerer")
		defer pump.close()
		tr, err := e.NewTrunk(false, pump, zerolog.Nop())
		require.NoError(t, err)
		defer tr.Close()
		require.ErrorIs(t, tr.HandleCandidate("candidate:garbage", "0", 0), media.ErrInvalidCandidate)
		require.ErrorIs(t, tr.HandleCandidate(strings.Repeat("x", 5000), "0", 0), media.ErrInvalidCandidate)
		require.NoError(t, tr.HandleCandidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "0", 0))
		tr.Close()
		require.ErrorIs(t, tr.HandleCandidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "0", 0), ErrTrunkClosed)
		require.ErrorIs(t, tr.HandleDescription("offer", offer), ErrTrunkClosed)
		require.ErrorIs(t, tr.Start(), ErrTrunkState, "the answerer never starts")
	})
}

// FuzzTrunkDescription: no first description, offer or answer, makes a
// trunk panic, and each refusal is a documented error.
func FuzzTrunkDescription(f *testing.F) {
	e, err := NewEngine(Config{BindAddress: net.IPv4(127, 0, 0, 1), IncludeLoopback: true}, zerolog.Nop())
	if err != nil {
		f.Fatal(err)
	}
	defer func() { _ = e.Close() }()
	offer := trunkOffer(f, e)
	for _, s := range []string{"", "v=0\r\n", offer, chromeOffer(), offer[:len(offer)/2],
		strings.Replace(offer, "m=application", "m=video", 1),
		strings.Replace(offer, "UDP/DTLS/SCTP", "RTP/AVP", 1),
		strings.ReplaceAll(offer, "a=fingerprint", "a=x")} {
		f.Add(false, s)
		f.Add(true, s)
	}
	f.Fuzz(func(t *testing.T, answer bool, sdp string) {
		typ := "offer"
		if answer {
			typ = "answer"
		}
		checkTrunkDescription(t, e, typ, sdp)
	})
}
