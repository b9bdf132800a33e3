package tomlpos

import (
	"fmt"
	"strconv"
	"strings"
)

// The decoder has already accepted the text as valid TOML, so the scan can
// be lenient: it only has to find where keys and values start, never judge
// them. On text the decoder refuses it still ends, without panicking, but
// what it returns means little.

// Pos is a 1-based line and byte column; the zero Pos means unknown.
type Pos struct{ Line, Col int }

// KeyPos is where a key and its value start. A table opened by a header has
// only a key position (its last name in the header); an element of an array
// has only a value position.
type KeyPos struct{ Key, Val Pos }

// Positions maps the key paths of a document (see Join and Index) to where
// their keys and values start.
type Positions map[string]KeyPos

// Value returns where the value at path starts if known, else where its key
// is, else the same for the closest enclosing table or array element that
// has a position: a key missing from a table is reported where the table
// starts. It returns the zero Pos when nothing on the way is known.
func (ps Positions) Value(path string) Pos { return ps.find(path, false) }

// Key is Value preferring the key's position: for problems with the key
// itself (unknown, misplaced) rather than with its value.
func (ps Positions) Key(path string) Pos { return ps.find(path, true) }

func (ps Positions) find(path string, atKey bool) Pos {
	for path != "" {
		e := ps[path]
		if !atKey && e.Val != (Pos{}) {
			return e.Val
		}
		if e.Key != (Pos{}) {
			return e.Key
		}
		if e.Val != (Pos{}) {
			return e.Val
		}
		path = path[:max(strings.LastIndexAny(path, ".["), 0)]
	}
	return Pos{}
}

// Join appends one key to a path: vip[0].backend[1].address, with keys that
// are not bare quoted (a."b c").
func Join(parent, key string) string {
	if !isBareKey(key) {
		key = strconv.Quote(key)
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// Index names element i of the array at path: path[i].
func Index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// Generic removes the array indexes from a path, keeping quoted keys intact:
// vip[0].backend[1].mac becomes vip.backend.mac.
func Generic(path string) string {
	var b strings.Builder
	quoted := false
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case quoted:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(path) {
				i++
				b.WriteByte(path[i])
			} else if c == '"' {
				quoted = false
			}
		case c == '"':
			quoted = true
			b.WriteByte(c)
		case c == '[':
			if j := strings.IndexByte(path[i:], ']'); j > 0 {
				i += j
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isBareKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

type posScanner struct {
	s         string
	i         int
	line      int
	lineStart int
	pos       Positions
	arrays    map[string]int // array-of-tables path → elements opened so far
}

// Scan maps every key path of a valid TOML document (see Join and Index) to
// where its key and value start. The result belongs to the caller and holds
// no reference to data.
func Scan(data []byte) Positions {
	p := &posScanner{
		s:      string(data),
		line:   1,
		pos:    make(Positions),
		arrays: make(map[string]int),
	}
	if strings.HasPrefix(p.s, "\ufeff") {
		p.i = 3
		p.lineStart = 3
	}
	table := ""
	for p.i < len(p.s) {
		p.skipSpace(true)
		if p.i >= len(p.s) {
			break
		}
		start := p.i
		switch p.s[p.i] {
		case '[':
			table = p.header()
		default:
			p.keyval(table)
		}
		p.skipSpace(false)
		if p.i == start {
			// Not something a valid document holds here: move on
			// rather than loop.
			p.skipLine()
		}
	}
	return p.pos
}

func (p *posScanner) here() Pos { return Pos{p.line, p.i - p.lineStart + 1} }

func (p *posScanner) peek(off int) byte {
	if p.i+off < len(p.s) {
		return p.s[p.i+off]
	}
	return 0
}

// advance consumes n bytes, keeping track of lines.
func (p *posScanner) advance(n int) {
	for ; n > 0 && p.i < len(p.s); n-- {
		if p.s[p.i] == '\n' {
			p.line++
			p.lineStart = p.i + 1
		}
		p.i++
	}
}

// skipSpace skips blanks and a comment, and with newlines also line ends,
// blank lines and comment lines.
func (p *posScanner) skipSpace(newlines bool) {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t':
			p.advance(1)
		case c == '#':
			for p.i < len(p.s) && p.s[p.i] != '\n' {
				p.advance(1)
			}
		case (c == '\n' || c == '\r') && newlines:
			p.advance(1)
		default:
			return
		}
	}
}

func (p *posScanner) skipLine() {
	for p.i < len(p.s) && p.s[p.i] != '\n' {
		p.advance(1)
	}
	p.advance(1)
}

func (p *posScanner) setKey(path string, at Pos) {
	e := p.pos[path]
	if e.Key == (Pos{}) {
		e.Key = at
		p.pos[path] = e
	}
}

func (p *posScanner) setVal(path string, at Pos) {
	e := p.pos[path]
	e.Val = at
	p.pos[path] = e
}

// header reads [a.b] or [[a.b]] and returns the path of the table it opens.
func (p *posScanner) header() string {
	array := p.peek(1) == '['
	if array {
		p.advance(2)
	} else {
		p.advance(1)
	}
	keys, at := p.key()
	path := ""
	for j, k := range keys {
		path = Join(path, k)
		if j == len(keys)-1 && array {
			n := p.arrays[path]
			p.arrays[path] = n + 1
			p.setKey(path, at[j])
			path = Index(path, n)
		} else if n, ok := p.arrays[path]; ok {
			path = Index(path, n-1)
		}
		p.setKey(path, at[j])
	}
	p.skipSpace(false)
	for p.i < len(p.s) && p.s[p.i] == ']' {
		p.advance(1)
	}
	return path
}

// keyval reads key = value inside the table at path.
func (p *posScanner) keyval(table string) {
	keys, at := p.key()
	if len(keys) == 0 {
		return
	}
	path := table
	for j, k := range keys {
		path = Join(path, k)
		p.setKey(path, at[j])
	}
	p.skipSpace(false)
	if p.peek(0) != '=' {
		return
	}
	p.advance(1)
	p.skipSpace(false)
	p.value(path)
}

// key reads a possibly dotted key and where each of its parts starts.
func (p *posScanner) key() ([]string, []Pos) {
	var keys []string
	var at []Pos
	for {
		p.skipSpace(false)
		start := p.here()
		k, ok := p.simpleKey()
		if !ok {
			return keys, at
		}
		keys = append(keys, k)
		at = append(at, start)
		p.skipSpace(false)
		if p.peek(0) != '.' {
			return keys, at
		}
		p.advance(1)
	}
}

func (p *posScanner) simpleKey() (string, bool) {
	switch p.peek(0) {
	case '"':
		raw := p.basicString()
		return unescapeBasic(strings.TrimSuffix(strings.TrimPrefix(raw, `"`), `"`)), true
	case '\'':
		return strings.TrimSuffix(strings.TrimPrefix(p.literalString(), "'"), "'"), true
	}
	start := p.i
	for p.i < len(p.s) && !strings.ContainsRune(" \t=.[]#,{}\r\n\"'", rune(p.s[p.i])) {
		p.advance(1)
	}
	return p.s[start:p.i], p.i > start
}

// value reads one value of the key at path, recording where it starts and,
// for arrays and inline tables, where their elements and keys start.
func (p *posScanner) value(path string) {
	p.setVal(path, p.here())
	switch p.peek(0) {
	case '"':
		if strings.HasPrefix(p.s[p.i:], `"""`) {
			p.multiline('"')
		} else {
			p.basicString()
		}
	case '\'':
		if strings.HasPrefix(p.s[p.i:], "'''") {
			p.multiline('\'')
		} else {
			p.literalString()
		}
	case '[':
		p.advance(1)
		for n := 0; p.i < len(p.s); n++ {
			p.skipSpace(true)
			if p.peek(0) == ']' || p.i >= len(p.s) {
				break
			}
			start := p.i
			p.value(Index(path, n))
			p.skipSpace(true)
			if p.peek(0) == ',' {
				p.advance(1)
			} else if p.i == start {
				break
			}
		}
		p.advance(1) // ]
	case '{':
		p.advance(1)
		for p.i < len(p.s) {
			p.skipSpace(true)
			if p.peek(0) == '}' || p.i >= len(p.s) {
				break
			}
			start := p.i
			p.keyval(path)
			p.skipSpace(true)
			if p.peek(0) == ',' {
				p.advance(1)
			} else if p.i == start {
				break
			}
		}
		p.advance(1) // }
	default:
		// Numbers, booleans, dates and times (which may contain a space
		// between date and time) end at a separator or a comment.
		for p.i < len(p.s) && !strings.ContainsRune(",]}#\r\n", rune(p.s[p.i])) {
			p.advance(1)
		}
	}
}

// basicString reads "..." and returns it with its quotes.
func (p *posScanner) basicString() string {
	start := p.i
	p.advance(1)
	for p.i < len(p.s) && p.s[p.i] != '"' && p.s[p.i] != '\n' {
		if p.s[p.i] == '\\' {
			p.advance(1)
		}
		p.advance(1)
	}
	p.advance(1)
	return p.s[start:min(p.i, len(p.s))]
}

// literalString reads '...' and returns it with its quotes.
func (p *posScanner) literalString() string {
	start := p.i
	p.advance(1)
	for p.i < len(p.s) && p.s[p.i] != '\'' && p.s[p.i] != '\n' {
		p.advance(1)
	}
	p.advance(1)
	return p.s[start:min(p.i, len(p.s))]
}

// multiline reads a multi-line string (three quotes q). Up to two more
// quotes right before the closing three belong to the content.
func (p *posScanner) multiline(q byte) {
	delim := strings.Repeat(string(q), 3)
	p.advance(3)
	for p.i < len(p.s) {
		if q == '"' && p.s[p.i] == '\\' {
			p.advance(2)
			continue
		}
		if strings.HasPrefix(p.s[p.i:], delim) {
			p.advance(3)
			for n := 0; n < 2 && p.peek(0) == q; n++ {
				p.advance(1)
			}
			return
		}
		p.advance(1)
	}
}

// unescapeBasic decodes the escapes of a TOML basic string (the decoder has
// already checked them).
func unescapeBasic(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		digits := 0
		switch s[i] {
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case 'x':
			digits = 2
		case 'u':
			digits = 4
		case 'U':
			digits = 8
		default: // \" and \\
			b.WriteByte(s[i])
		}
		if digits > 0 && i+digits < len(s) {
			if r, err := strconv.ParseUint(s[i+1:i+1+digits], 16, 32); err == nil {
				b.WriteRune(rune(r))
			}
			i += digits
		}
	}
	return b.String()
}
