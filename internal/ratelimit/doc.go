// Package ratelimit limits how often one client address may do something (obtain a guest
// token), with a token bucket per address and bounded memory, and tells which address a request
// comes from when trusted reverse proxies stand in front of the node.
//
// It imports only the standard library and golang.org/x/time/rate; the join page (web) and the
// Matrix bridge's meeting API use it through small interfaces of their own.
package ratelimit
