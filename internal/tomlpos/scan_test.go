package tomlpos

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const trickyTOML = "# positions in awkward places\r\n" + `
"quoted.key" = 1
a.b . c = "x # not a comment"   # a comment
ml = """
one "" two
"""
lit = '''
[not.a.table]
'''
arr = [
  1, # one
  [2, 3],
  { k = "v" },
]
when = 1979-05-27 07:32:00
[t]
x = { y.z = 'q', w = [ {u = 1}, {u = 2} ] }
[[aot]]
n = 1
[[aot.sub]]
m = 1
[aot.tab]
p = 1
[[aot]]
n = 2
[[aot.sub]]
m = 2
[[aot.sub]]
m = 3
[ t . deep ]
"esc\u0041ped" = true
`

func TestScan(t *testing.T) {
	var doc map[string]any
	if _, err := toml.Decode(trickyTOML, &doc); err != nil {
		t.Fatal(err)
	}
	pos := Scan([]byte(trickyTOML))
	for _, tc := range []struct {
		path     string
		key, val Pos
	}{
		{`"quoted.key"`, Pos{3, 1}, Pos{3, 16}},
		{"a", Pos{4, 1}, Pos{}},
		{"a.b.c", Pos{4, 7}, Pos{4, 11}},
		{"ml", Pos{5, 1}, Pos{5, 6}},
		{"lit", Pos{8, 1}, Pos{8, 7}},
		{"arr", Pos{11, 1}, Pos{11, 7}},
		{"arr[0]", Pos{}, Pos{12, 3}},
		{"arr[1][1]", Pos{}, Pos{13, 7}},
		{"arr[2].k", Pos{14, 5}, Pos{14, 9}},
		{"when", Pos{16, 1}, Pos{16, 8}},
		{"t", Pos{17, 2}, Pos{}},
		{"t.x.y.z", Pos{18, 9}, Pos{18, 13}},
		{"t.x.w[1].u", Pos{18, 34}, Pos{18, 38}},
		{"aot[0]", Pos{19, 3}, Pos{}},
		{"aot[0].n", Pos{20, 1}, Pos{20, 5}},
		{"aot[0].sub[0].m", Pos{22, 1}, Pos{22, 5}},
		{"aot[0].tab.p", Pos{24, 1}, Pos{24, 5}},
		{"aot[1]", Pos{25, 3}, Pos{}},
		{"aot[1].sub[1].m", Pos{30, 1}, Pos{30, 5}},
		{"t.deep", Pos{31, 7}, Pos{}},
		{`t.deep.escAped`, Pos{32, 1}, Pos{32, 18}},
	} {
		if got := pos[tc.path]; got != (KeyPos{tc.key, tc.val}) {
			t.Errorf("%s: got %+v, want key %+v val %+v", tc.path, got, tc.key, tc.val)
		}
	}
	if _, ok := pos["not.a.table"]; ok {
		t.Error("a table header inside a multi-line string was scanned")
	}
}

// A byte-order mark is not part of the first line's columns, and a CR
// before a line's LF is not the start of anything.
func TestScanBOMAndCRLF(t *testing.T) {
	doc := "\ufeffa = 1\r\n[t]\r\n  b = [ 'x' ,\r\n 2 ]\r\n"
	pos := Scan([]byte(doc))
	for path, want := range map[string]KeyPos{
		"a":      {Pos{1, 1}, Pos{1, 5}},
		"t":      {Pos{2, 2}, Pos{}},
		"t.b":    {Pos{3, 3}, Pos{3, 7}},
		"t.b[0]": {Pos{}, Pos{3, 9}},
		"t.b[1]": {Pos{}, Pos{4, 2}},
	} {
		if got := pos[path]; got != want {
			t.Errorf("%s: got %+v, want %+v", path, got, want)
		}
	}
	if len(pos) != 5 {
		t.Errorf("found %d paths, want 5: %v", len(pos), slices.Sorted(maps.Keys(pos)))
	}
}

// Value and Key fall back to the key, then to the enclosing table or array
// element, so a missing key is reported where its table starts.
func TestPositionsFallback(t *testing.T) {
	doc := "top = 1\n[[vip]]\nname = \"web\"\n[vip.health]\n[[vip]]\nports = [80, 443]\nx.y = 1\n"
	pos := Scan([]byte(doc))
	for _, tc := range []struct {
		path       string
		value, key Pos
	}{
		{"top", Pos{1, 7}, Pos{1, 1}},
		{"vip[0].name", Pos{3, 8}, Pos{3, 1}},
		{"vip[0].port", Pos{2, 3}, Pos{2, 3}},        // missing: at [[vip]]
		{"vip[0].health.type", Pos{4, 6}, Pos{4, 6}}, // missing: at the header's last name
		{"vip[1].ports[1]", Pos{6, 14}, Pos{6, 14}},  // an element has no key
		{"vip[1].ports[5]", Pos{6, 9}, Pos{6, 1}},    // no such element: the array
		{"vip[1].x", Pos{7, 1}, Pos{7, 1}},           // a dotted key's table has no value
		{"vip[1].x.y", Pos{7, 7}, Pos{7, 3}},
		{"nothing.here", Pos{}, Pos{}},
		{"", Pos{}, Pos{}},
	} {
		if got := pos.Value(tc.path); got != tc.value {
			t.Errorf("Value(%s) = %+v, want %+v", tc.path, got, tc.value)
		}
		if got := pos.Key(tc.path); got != tc.key {
			t.Errorf("Key(%s) = %+v, want %+v", tc.path, got, tc.key)
		}
	}
}

func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		parent, key   string
		index         int
		want, generic string
	}{
		{"", "vip", 0, "vip[0]", "vip"},
		{"vip[0]", "backend", 1, "vip[0].backend[1]", "vip.backend"},
		{"a", "b c", 2, `a."b c"[2]`, `a."b c"`},
		{"a", "x[1]", 0, `a."x[1]"[0]`, `a."x[1]"`}, // brackets inside quotes are kept
		{"", `q"[0]`, 3, `"q\"[0]"[3]`, `"q\"[0]"`}, // so is an escaped quote
		{"", "", 0, `""[0]`, `""`},
		{"", "dotted.key", 0, `"dotted.key"[0]`, `"dotted.key"`},
	} {
		got := Index(Join(tc.parent, tc.key), tc.index)
		if got != tc.want {
			t.Errorf("Index(Join(%q, %q), %d) = %s, want %s", tc.parent, tc.key, tc.index, got, tc.want)
		}
		if g := Generic(got); g != tc.generic {
			t.Errorf("Generic(%s) = %s, want %s", got, g, tc.generic)
		}
	}
}

// The decoder produces these types into an any; each has its own name.
func TestTypeName(t *testing.T) {
	var doc map[string]any
	_, err := toml.Decode(`s = "x"
i = 1
f = 1.5
inf = inf
b = true
odt = 1979-05-27T07:32:00Z
ldt = 1979-05-27T07:32:00
ld = 1979-05-27
lt = 07:32:00
arr = [1, "x"]
empty = []
aot = [{a = 1}]
tab = {a = 1}
[[hdr]]
`, &doc)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"s": "a string", "i": "an integer", "f": "a float", "inf": "a float", "b": "a boolean",
		"odt": "a date or time", "ldt": "a date or time", "ld": "a date or time", "lt": "a date or time",
		"arr": "an array", "empty": "an array", "aot": "an array", "hdr": "an array", "tab": "a table",
	} {
		if got := TypeName(doc[k]); got != want {
			t.Errorf("%s (%T): %q, want %q", k, doc[k], got, want)
		}
	}
	if got := TypeName(uint8(1)); got != "uint8" {
		t.Errorf("a type the decoder never produces: %q", got)
	}
}

// The decoder's column is wrong for errors at the start of a line;
// ParseError's comes from the byte offset.
func TestParseError(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want Pos
		msg  string
	}{
		{"a = 1\n=\n", Pos{2, 1}, "key name appears blank"},               // the decoder says 2:7
		{"a = 1\na = 2\n", Pos{2, 1}, "Key 'a' has already been defined"}, // the decoder says 2:7
		{"a = 1\n[x\n", Pos{2, 3}, "to end table name"},                   // the decoder says 3:3
		{"a = [1\n", Pos{1, 7}, "expected a comma"},                       // at the end of the file
		{"a = 1\n  b = \n", Pos{2, 7}, "expected value"},
		// A byte-order mark is not part of the first line's columns.
		{"\ufeffa = @\n", Pos{1, 5}, "expected value"},
		{"\ufeffx = 1\na = @\n", Pos{2, 5}, "expected value"},
	} {
		var m map[string]any
		_, err := toml.Decode(tc.doc, &m)
		msg, at, ok := ParseError([]byte(tc.doc), err)
		if !ok || at != tc.want || !strings.Contains(msg, tc.msg) {
			t.Errorf("%q: %v %+v %q, want %+v and %q (decoder: %v)", tc.doc, ok, at, msg, tc.want, tc.msg, err)
		}
	}
	// A wrapped ParseError is found; another error is not one.
	doc := "a = 1\n=\n"
	_, err := toml.Decode(doc, new(map[string]any))
	if _, at, ok := ParseError([]byte(doc), fmt.Errorf("load x.toml: %w", err)); !ok || at != (Pos{2, 1}) {
		t.Errorf("wrapped: %v %+v", ok, at)
	}
	if _, _, ok := ParseError(nil, errors.New("read x.toml: permission denied")); ok {
		t.Error("not a ParseError, but ok")
	}
}

// For any document the decoder accepts, the scan finds every key the
// decoder found, at a position inside the document; for any document at
// all it ends without panicking.
func FuzzScan(f *testing.F) {
	for _, s := range []string{
		trickyTOML,
		"\ufeffa = 1\r\n[t]\r\nb = 2\r\n",
		// An appliance-style file: headers, arrays of tables, sub-tables.
		"[appliance]\ninterface = \"eth1\"\ncpus = [0, 1]\n\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.10\"\n" +
			"port = 80\n[vip.health]\ntype = \"http\"\n[[vip.backend]]\naddress = \"10.0.0.1\"\nweight = 2\n" +
			"[[vip.backend]]\naddress = \"fd00::1\"\nmac = \"02:00:00:00:00:0b\"\n",
		// Quotes, escapes and brackets where keys and values may be.
		`"a\"b" = 'c"d'` + "\n" + `"[x]".'y.z' = """q""""` + "\n" + `e = '''it's'''` + "\n",
		// Inline tables and arrays nested and spread over lines.
		"a = { b = [ { c = [1, [2, { d = 3 }]] } ], e.f = 4 }\nl = [\n# c\n[\n1,\n],\n]\n",
		// Dates with a space, numbers with signs, underscores and prefixes.
		"t = 1979-05-27 07:32:00.999-07:00 # c\nn = [+1_000, -0x_1, 0o7, 0b1, -inf, nan, 6.02e+23]\n",
		// Things the decoder refuses: truncated strings, headers, arrays.
		"a = \"x", "a = '''x", "[[a", "a = [1,", "a = {b = ", "\"", "=", "[", "a.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var m map[string]any
		md, err := toml.Decode(doc, &m)
		pos := Scan([]byte(doc))
		if err != nil {
			return
		}
		lines := strings.Split(doc, "\n")
		found := make(map[string]bool)
		for p, kp := range pos {
			found[Generic(p)] = true
			for _, at := range []Pos{kp.Key, kp.Val} {
				if at != (Pos{}) && (at.Line < 1 || at.Line > len(lines) || at.Col < 1 || at.Col > len(lines[at.Line-1])) {
					t.Fatalf("%s at %+v: outside the document", p, at)
				}
			}
		}
		for _, k := range md.Keys() {
			path := ""
			for _, seg := range k {
				path = Join(path, seg)
			}
			if !found[path] {
				t.Fatalf("key %s not found by the scan (found %v)", path, slices.Sorted(maps.Keys(found)))
			}
		}
	})
}
