// Package archtest holds the test that enforces the one-way import rules of DESIGN.md section 1
// (deps_test.go, after the Go standard library's src/go/build/deps_test.go). It has no code of
// its own and nothing imports it.
package archtest
