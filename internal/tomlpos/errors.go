package tomlpos

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/BurntSushi/toml"
)

// ParseError returns the message of the toml.ParseError in err and where it
// is. The decoder's own column is wrong for errors at the start of a line,
// so the line and column are recomputed from its byte offset when it has
// one. ok is false when err holds no toml.ParseError.
func ParseError(data []byte, err error) (msg string, at Pos, ok bool) {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return "", Pos{}, false
	}
	// The decoder drops a byte-order mark before it parses, so its offsets
	// count from after the mark.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	at = Pos{pe.Position.Line, pe.Position.Col}
	if s := pe.Position.Start; s >= 0 && s <= len(data) && pe.Position.Line > 0 {
		at = posAt(data, s)
	}
	return pe.Message, at, true
}

// posAt converts a byte offset into data to a line and column.
func posAt(data []byte, off int) Pos {
	return Pos{
		Line: 1 + bytes.Count(data[:off], []byte{'\n'}),
		Col:  off - bytes.LastIndexByte(data[:off], '\n'),
	}
}

// TypeName names the TOML type of a value the decoder produced into an
// `any`, with its article, for messages like "must be a string, not an
// integer".
func TypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date or time"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}
