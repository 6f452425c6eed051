package media

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestUpdateMetadataLimits: a participant's own update is refused, with
// nothing changed and nothing announced, when it would take the name,
// metadata or attributes over LiveKit's limits, or change an attribute
// its token asserted; what stays within them is applied and announced.
func TestUpdateMetadataLimits(t *testing.T) {
	s := newTestSFU(t)
	tests := []struct {
		name     string
		partName string
		metadata string
		attrs    map[string]string
		want     error // nil: applied
	}{
		{"name at the limit", strings.Repeat("n", maxNameBytes), "", nil, nil},
		{"name too long", strings.Repeat("n", maxNameBytes+1), "", nil, ErrInvalidName},
		{"name with a control character", "Ann\x1b[2J", "", nil, ErrInvalidName},
		{"metadata at the limit", "", strings.Repeat("m", maxMetadataBytes), nil, nil},
		{"metadata too large", "", strings.Repeat("m", maxMetadataBytes+1), nil, ErrLimitExceeded},
		{"a new attribute", "", "", map[string]string{"mood": "happy"}, nil},
		{"too many attributes at once", "", "", manyAttrs(maxAttributes + 1), ErrLimitExceeded},
		{"too many attributes with the token's", "", "", manyAttrs(maxAttributes), ErrLimitExceeded},
		{"attribute key too long", "", "", map[string]string{strings.Repeat("k", maxAttributeKey+1): "v"}, ErrLimitExceeded},
		{"attributes too large", "", "", map[string]string{"a": strings.Repeat("v", maxAttributesBytes/2), "b": strings.Repeat("v", maxAttributesBytes/2)}, ErrLimitExceeded},
		{"overwrite an asserted attribute", "", "", map[string]string{"matrix_user_id": "@mallory:evil.example"}, ErrAttributeProtected},
		{"delete an asserted attribute", "", "", map[string]string{"matrix_user_id": ""}, ErrAttributeProtected},
		{"an asserted attribute with its own value", "", "", map[string]string{"matrix_user_id": "@ann:example.com", "mood": "ok"}, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := s.Room("meta-"+string(rune('a'+i)), true)
			require.NoError(t, err)
			sa, sb := newRecordingSignaller(), newRecordingSignaller()
			a, _, err := r.Join(context.Background(), JoinParams{Identity: "a", Name: "Ann", Metadata: "m0", Permissions: allowAll(), Signaller: sa, Transport: newFakeTransport(sa),
				Attributes: map[string]string{"matrix_user_id": "@ann:example.com"}})
			require.NoError(t, err)
			a.Start(context.Background())
			b, _, err := r.Join(context.Background(), JoinParams{Identity: "b", Permissions: allowAll(), Signaller: sb, Transport: newFakeTransport(sb)})
			require.NoError(t, err)
			b.Start(context.Background())
			before := a.info()
			seen := len(sb.of("participants"))

			err = a.UpdateMetadata(context.Background(), tc.partName, tc.metadata, tc.attrs)
			after := a.info()
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				require.Equal(t, before.Version, after.Version, "nothing changed")
				require.Equal(t, before.Attributes, after.Attributes)
				require.Equal(t, before.Name, after.Name)
				require.Equal(t, before.Metadata, after.Metadata)
				require.Len(t, sb.of("participants"), seen, "nothing announced")
				return
			}
			require.NoError(t, err)
			require.Greater(t, after.Version, before.Version)
			require.Equal(t, "@ann:example.com", after.Attributes["matrix_user_id"])
			require.Greater(t, len(sb.of("participants")), seen, "the others see the change")
		})
	}
}

func manyAttrs(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m["k"+strings.Repeat("x", i%7)+string(rune('A'+i%26))+string(rune('a'+i/26))] = "v"
	}
	return m
}

// TestUpdateMetadataRate: a burst of updates is applied up to the bucket's
// size; the rest are refused with ErrRateLimited and change nothing.
func TestUpdateMetadataRate(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("rate", true)
	require.NoError(t, err)
	a, _, err := r.Join(context.Background(), JoinParams{Identity: "a", Permissions: allowAll(), Signaller: newRecordingSignaller(), Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	a.Start(context.Background())
	var refused int
	for i := range 3 * metadataBurst {
		err := a.UpdateMetadata(context.Background(), "", "m"+strings.Repeat("x", i), nil)
		if i < metadataBurst {
			require.NoError(t, err, "update %d is within the burst", i)
			continue
		}
		if err != nil {
			require.ErrorIs(t, err, ErrRateLimited)
			refused++
		}
	}
	require.Positive(t, refused, "updates beyond the burst are refused")
}

// TestTokenBucket: the bucket's arithmetic on a clock the test controls.
func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name string
		at   []time.Duration // offsets from t0 of successive takes
		want []bool
	}{
		{"burst then empty", []time.Duration{0, 0, 0, 0}, []bool{true, true, true, false}},
		{"one back per period", []time.Duration{0, 0, 0, 0, time.Second, time.Second}, []bool{true, true, true, false, true, false}},
		{"refill capped at the burst", []time.Duration{0, time.Hour, time.Hour, time.Hour, time.Hour}, []bool{true, true, true, true, false}},
		{"a clock going back gives nothing", []time.Duration{0, 0, 0, -time.Hour, 0}, []bool{true, true, true, false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTokenBucket(3, time.Second)
			for i, d := range tc.at {
				require.Equal(t, tc.want[i], b.take(t0.Add(d)), "take %d at %s", i, d)
			}
		})
	}
}
