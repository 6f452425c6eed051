// Package config owns the node's TOML configuration: the defaults, strict decoding (a key the
// node does not know is an error naming it and its line) and validation that reports every
// problem at once.
//
// Every option is shown with its default in config.example.toml at the repository root; a test
// keeps the two in step. config imports only the standard library, BurntSushi/toml and
// internal/logging (for the level and format names); never media, bridge, federation, web or cmd.
package config
