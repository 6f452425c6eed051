package livekit

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"

	"entente.dev/entente/internal/names"
)

// Keys maps API keys to their secrets.
type Keys map[string]string

// Grant is what a verified token allows.
type Grant struct {
	Identity   string
	Name       string
	Metadata   string
	Attributes map[string]string
	Room       string
	Kind       livekit.ParticipantInfo_Kind
	// RoomCreate allows creating the room when it does not exist.
	RoomCreate     bool
	CanPublish     bool
	CanSubscribe   bool
	CanPublishData bool
	Hidden         bool
	CanUpdateOwn   bool
	Sources        []livekit.TrackSource
	ExpiresAt      time.Time
	// APIKey is the key the token was signed with.
	APIKey string
}

// Verify checks an HS256 LiveKit access token against keys and returns its
// grant. Only HS256 is accepted (auth.ParseAPIToken refuses other
// algorithms, "none" included); the issuer selects the secret; exp is
// required (livekit/protocol auth/verifier.go).
func Verify(keys Keys, raw string) (*Grant, error) {
	if raw == "" {
		return nil, ErrNoToken
	}
	if len(raw) > maxTokenLength {
		return nil, fmt.Errorf("%w: token too long", ErrInvalidToken)
	}
	v, err := auth.ParseAPIToken(raw)
	if err != nil {
		// jwt joins several errors here, which errors.Unwrap cannot
		// unwrap (it would print "<nil>"): keep the first sentence instead.
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, tokenErrorText(err))
	}
	secret, ok := keys[v.APIKey()]
	if !ok || secret == "" {
		return nil, fmt.Errorf("%w: unknown API key", ErrInvalidToken)
	}
	apiKey := v.APIKey()
	claims, grants, err := v.Verify(secret)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) || errors.Is(err, jwt.ErrTokenNotValidYet) {
			return nil, ErrTokenExpired
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, tokenErrorText(err))
	}
	if claims.ExpiresAt == nil {
		return nil, fmt.Errorf("%w: no expiry", ErrInvalidToken)
	}
	g := &Grant{
		Identity: grants.Identity, Name: grants.Name, Metadata: grants.Metadata,
		Attributes: grants.Attributes, Kind: grants.GetParticipantKind(), ExpiresAt: claims.ExpiresAt.Time,
		APIKey: apiKey,
	}
	vg := grants.Video
	if vg == nil || !vg.RoomJoin || vg.Room == "" {
		return nil, ErrNotAllowed
	}
	if g.Identity == "" {
		return nil, ErrNoIdentity
	}
	if err := checkParticipant(g.Identity, g.Name); err != nil {
		return nil, err
	}
	if err := checkRoom(vg.Room); err != nil {
		return nil, err
	}
	g.Room = vg.Room
	g.RoomCreate = vg.RoomCreate
	g.CanPublish = vg.GetCanPublish()
	g.CanSubscribe = vg.GetCanSubscribe()
	g.CanPublishData = vg.GetCanPublishData()
	g.Hidden = vg.Hidden
	g.CanUpdateOwn = vg.GetCanUpdateOwnMetadata()
	for _, s := range vg.CanPublishSources {
		g.Sources = append(g.Sources, sourceFromString(s))
	}
	return g, nil
}

// maxTokenLength bounds what is parsed; real tokens are well under 4 KiB.
const maxTokenLength = 16 * 1024

// Limits on a participant's identity and name, in bytes: LiveKit's
// defaults (livekit/livekit pkg/config/config.go DefaultConfig.Limit
// MaxParticipantIdentityLength and MaxParticipantNameLength, both 256;
// pkg/service/utils.go ValidateConnectRequest enforces the identity's at
// connect time).
const (
	MaxIdentityLength = 256
	MaxNameLength     = 256
	// MaxRoomNameLength is LiveKit's default MaxRoomNameLength (the
	// same config block); a room's name is a map key, a log field and a
	// history row, so it is bounded like the identity.
	MaxRoomNameLength = 256
)

// checkRoom refuses a room name over MaxRoomNameLength or with characters
// that are not printable. An empty name is left to the room check at join
// (a token may grant no room; joining then needs one).
func checkRoom(room string) error {
	if room != "" && (len(room) > MaxRoomNameLength || !names.Printable(room, MaxRoomNameLength)) {
		return fmt.Errorf("%w: room name must be at most %d bytes of printable UTF-8", ErrInvalidRoom, MaxRoomNameLength)
	}
	return nil
}

// checkParticipant refuses identities and names the join page would
// refuse (internal/names.Printable: control and format characters, bidi
// overrides among them, let one participant pass for another in every
// client's list), beyond LiveKit's length limits. Matrix identities
// (base64 hashes, "@user:server:DEVICE") are printable and pass.
func checkParticipant(identity, name string) error {
	if len(identity) > MaxIdentityLength || !names.Printable(identity, MaxIdentityLength) {
		return fmt.Errorf("%w: identity must be 1 to %d bytes of printable UTF-8", ErrInvalidIdentity, MaxIdentityLength)
	}
	if name != "" && (len(name) > MaxNameLength || !names.Printable(name, MaxNameLength)) {
		return fmt.Errorf("%w: name must be at most %d bytes of printable UTF-8", ErrInvalidName, MaxNameLength)
	}
	return nil
}

// tokenErrorText keeps jwt's first sentence, which names the problem
// without echoing the token.
func tokenErrorText(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, ':'); i > 0 && i < 60 {
		return s[:i]
	}
	return s
}

func sourceFromString(s string) livekit.TrackSource {
	switch strings.ToLower(s) {
	case "camera":
		return livekit.TrackSource_CAMERA
	case "microphone":
		return livekit.TrackSource_MICROPHONE
	case "screen_share":
		return livekit.TrackSource_SCREEN_SHARE
	case "screen_share_audio":
		return livekit.TrackSource_SCREEN_SHARE_AUDIO
	}
	return livekit.TrackSource_UNKNOWN
}

// Minter mints access tokens with one of the node's keys.
type Minter struct {
	Key    string
	Secret string
	TTL    time.Duration
}

// MintOptions are the grants of a minted token beyond room and identity.
type MintOptions struct {
	Name         string
	Metadata     string
	RoomCreate   bool
	CanPublish   bool
	CanSubscribe bool
	// CanPublishData allows sending data packets.
	CanPublishData bool
	CanUpdateOwn   bool
	// Attributes become the participant's attributes (visible to the
	// room) and reach an Admitter in Grant.Attributes.
	Attributes map[string]string
}

// Mint returns a signed token for identity in room. It refuses what
// Verify would refuse at join (an empty, over-long or unprintable
// identity, name or room name), so that `entente token` and the token
// services fail where the mistake is made, not at the client's join.
func (m Minter) Mint(room, identity string, o MintOptions) (string, error) {
	if identity == "" {
		return "", ErrNoIdentity
	}
	if err := checkParticipant(identity, o.Name); err != nil {
		return "", err
	}
	if err := checkRoom(room); err != nil {
		return "", err
	}
	t := auth.NewAccessToken(m.Key, m.Secret)
	g := &auth.VideoGrant{RoomJoin: true, Room: room, RoomCreate: o.RoomCreate, CanUpdateOwnMetadata: &o.CanUpdateOwn}
	g.SetCanPublish(o.CanPublish)
	g.SetCanSubscribe(o.CanSubscribe)
	g.SetCanPublishData(o.CanPublishData)
	t.SetVideoGrant(g).SetIdentity(identity).SetName(o.Name).SetMetadata(o.Metadata).SetValidFor(m.TTL)
	if len(o.Attributes) > 0 {
		t.SetAttributes(o.Attributes)
	}
	return t.ToJWT()
}

// MintJoinToken mints a token that may create the room, publish and
// subscribe: what the join page and `entente token` hand out.
func (m Minter) MintJoinToken(room, identity, name string) (string, error) {
	return m.Mint(room, identity, MintOptions{
		Name: name, RoomCreate: true, CanPublish: true, CanSubscribe: true, CanPublishData: true,
	})
}

// Refresh mints a new token with g's claims, signed with the key that
// signed g's token, valid for ttl. The server sends one at join and then
// periodically (SignalResponse.refresh_token) so that a client that must
// reconnect after its first token expired still can
// (livekit/livekit pkg/service/roommanager.go refreshToken).
func (g *Grant) Refresh(keys Keys, ttl time.Duration) (string, error) {
	secret, ok := keys[g.APIKey]
	if !ok {
		return "", fmt.Errorf("%w: unknown API key", ErrInvalidToken)
	}
	vg := &auth.VideoGrant{
		RoomJoin: true, Room: g.Room, RoomCreate: g.RoomCreate, Hidden: g.Hidden,
		CanUpdateOwnMetadata: &g.CanUpdateOwn,
	}
	vg.SetCanPublish(g.CanPublish)
	vg.SetCanSubscribe(g.CanSubscribe)
	vg.SetCanPublishData(g.CanPublishData)
	if len(g.Sources) > 0 {
		vg.SetCanPublishSources(g.Sources)
	}
	t := auth.NewAccessToken(g.APIKey, secret)
	t.SetVideoGrant(vg).SetIdentity(g.Identity).SetName(g.Name).SetMetadata(g.Metadata).
		SetKind(g.Kind).SetValidFor(ttl)
	if len(g.Attributes) > 0 {
		t.SetAttributes(g.Attributes)
	}
	return t.ToJWT()
}
