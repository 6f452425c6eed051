package web

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"unicode/utf8"

	"entente.dev/entente/internal/names"
)

// FuzzDecodeJoin feeds arbitrary bodies to the join decoder, through the same
// size limit as the handler: it must never panic, must classify every failure
// with one of its sentinels, and must only accept what names.Printable allows.
func FuzzDecodeJoin(f *testing.F) {
	for _, s := range []string{
		`{"room":"r","name":"n"}`, `{"room":"","name":""}`, `{}`, `[]`, `null`, ``,
		`{"room":"a\u0000","name":"n"}`, `{"room":"r","name":"n"} x`, "{\"room\":\"\xff\"}",
		`{"room":"r","name":"n","room":"again"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req, err := decodeJoin(http.MaxBytesReader(rec, io.NopCloser(bytes.NewReader(body)), maxJoinBody))
		if err != nil {
			if !errors.Is(err, ErrNotJSON) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrBadRoom) && !errors.Is(err, ErrBadName) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if len(body) > maxJoinBody {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		if !utf8.ValidString(req.Room) || !names.Printable(req.Room, maxRoomLen) || !names.Printable(req.Name, maxNameLen) {
			t.Fatalf("accepted invalid request %+q", req)
		}
	})
}
