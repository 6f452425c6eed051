package config

import (
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads the TOML file at path over Default and validates the result. See Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes the TOML document data over Default, refuses keys the node does not know
// (UnknownKeyError, naming key and line) and validates the result (ValidationError). Unknown
// keys and validation problems are all reported together, joined with errors.Join. name is used
// in messages, usually the file path.
func Parse(data []byte, name string) (*Config, error) {
	c := Default()
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if c.Matrix != nil {
		c.Matrix.applyDefaults()
	}
	var errs []error
	for _, k := range unknownKeys(md) {
		errs = append(errs, &UnknownKeyError{File: name, Key: k.String(), Line: keyLine(string(data), k)})
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// unknownKeys returns, in document order, the keys the decoder did not store in Config, and the
// keys it stored only by a case-insensitive match (BurntSushi/toml matches field names that way;
// "[Server]" would otherwise pass). Only the outermost unknown key of a subtree is returned:
// "[foo]" with "a = 1" below it reports "foo", not also "foo.a".
func unknownKeys(md toml.MetaData) []toml.Key {
	unknown := map[string]bool{}
	for _, k := range md.Undecoded() {
		unknown[k.String()] = true
	}
	var out []toml.Key
	root := reflect.TypeFor[Config]()
	for _, k := range md.Keys() {
		top := k
		if n := knownPrefix(root, k); n < len(k) {
			top = k[:n+1]
		} else if !unknown[k.String()] {
			continue
		}
		if !slices.ContainsFunc(out, func(o toml.Key) bool { return hasPrefix(top, o) }) {
			out = append(out, top)
		}
	}
	return out
}

func hasPrefix(k, prefix toml.Key) bool {
	if len(prefix) > len(k) {
		return false
	}
	for i := range prefix {
		if k[i] != prefix[i] {
			return false
		}
	}
	return true
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// knownPrefix returns how many leading parts of k name, with exact case, a field of t (a map
// accepts any name; a value that is not a table ends the walk).
func knownPrefix(t reflect.Type, k toml.Key) int {
	for i, part := range k {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if reflect.PointerTo(t).Implements(textUnmarshaler) {
			return len(k)
		}
		switch t.Kind() {
		case reflect.Struct:
			f, ok := fieldByTag(t, part)
			if !ok {
				return i
			}
			t = f.Type
		case reflect.Map:
			t = t.Elem()
		default:
			return len(k)
		}
	}
	return len(k)
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// keyProbe fails on purpose when the decoder reaches it, so that the decoder's ParseError tells
// the position of the key; the MetaData keeps key positions private.
type keyProbe struct{}

var errProbe = errors.New("probe")

func (keyProbe) UnmarshalTOML(any) error { return errProbe }

// keyLine returns the 1-based line of key k in the TOML document data, or 0 if unknown. It
// decodes data again into a struct built to hold only k, whose leaf always fails.
func keyLine(data string, k toml.Key) int {
	t := reflect.TypeFor[keyProbe]()
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == "" || k[i] == "-" || strings.Contains(k[i], ",") {
			return 0 // not expressible as a struct tag
		}
		t = reflect.StructOf([]reflect.StructField{{
			Name: "F",
			Type: t,
			Tag:  reflect.StructTag("toml:" + strconv.Quote(k[i])),
		}})
	}
	_, err := toml.Decode(data, reflect.New(t).Interface())
	var pe toml.ParseError
	if errors.As(err, &pe) && pe.Message == errProbe.Error() && pe.LastKey == k.String() {
		return pe.Position.Line
	}
	return 0
}
