// Package logging builds the node's zerolog loggers from the configured level and format.
//
// It owns no global state: it never touches zerolog's global level or the global logger, and
// callers pass the returned logger down (or put it in a context with Logger.WithContext).
// It imports only zerolog and the standard library, and nothing else of Entente.
package logging
