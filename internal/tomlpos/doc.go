// Package tomlpos says where things are in a TOML document, so that a
// problem found after decoding can be reported as file:line:col.
//
// github.com/BurntSushi/toml reports where a syntax error is, but not where
// a key or value that decodes fine but fails validation sits: its MetaData
// has no positions and names the keys of all elements of an array of tables
// alike. Scan recovers them with a small scan of the text the decoder has
// already accepted, mapping every key path to where its key and value start.
//
// Key paths are written vip[0].backend[1].address: Join appends a key
// (quoting one that is not bare), Index an array element, and Generic takes
// the indexes out again. ParseError recomputes a decoder syntax error's
// position; TypeName names a decoded value's type for messages.
//
// # Lifetimes
//
// Nothing here keeps state between calls. Scan returns a fresh Positions
// map that the caller owns and that holds no reference to the document;
// Positions is safe for concurrent reads. All functions are safe for
// concurrent use.
package tomlpos
