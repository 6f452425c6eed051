package turn

import "errors"

var (
	// ErrMalformedUsername is a TURN username that is not "<expiry>:<identity>"
	// with a Unix time as expiry.
	ErrMalformedUsername = errors.New("turn: malformed username")
	// ErrExpired is a credential used after its expiry to create an allocation.
	ErrExpired = errors.New("turn: credential expired")
	// ErrBadPassword is a password that is not the one the node minted for the username.
	ErrBadPassword = errors.New("turn: wrong password")
	// ErrPeerRefused is a relay to an address that is not the node's media address.
	ErrPeerRefused = errors.New("turn: peer address refused")
	// ErrTCPRelay is an allocation asking for a TCP relay (RFC 6062), which the node does not offer.
	ErrTCPRelay = errors.New("turn: TCP relays are not offered")
	// ErrConfig is an unusable Config.
	ErrConfig = errors.New("turn: invalid configuration")
)
