package bunstore

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/chatbatch/chatbatch/store"
)

// A chunk's recipients are stored in one text column in a compact,
// length-prefixed form rather than as JSON: writing and reading it costs
// no escaping and no per-field allocation (the decoded strings are
// slices of the column's one string), which matters at 10,000
// recipients per request and 500 per chunk. It is still text, so it
// fits the column type on every database and stays readable in a SQL
// shell:
//
//	~2;2;4:name7:orderId;2;m6:user-a0:5:Alice7:ORD-001n0:8:room-001--
//
// that is "~2;", the number of variable names and the names, the number
// of recipients, then per recipient "m" (Vars is a map) or "n" (Vars is
// nil), its receiver and room, and for each name its value or "-" when
// the recipient has none. A string is written as its length in bytes,
// ":" and its bytes. Chunks stored by earlier versions hold a JSON array
// and are still read; so are chunks whose strings could not be written
// as they are (see encodeRecipients).
const recipientsV2 = "~2;"

// encodeRecipients writes rs in the compact form, or, if a string holds
// a NUL byte or is not valid UTF-8 (which no text column takes as it is;
// package batch never lets such a request in), as JSON.
func encodeRecipients(rs []store.Recipient) string {
	var names []string
	seen := map[string]bool{}
	size := len(recipientsV2) + 16
	for i := range rs {
		for name, v := range rs[i].Vars {
			if !seen[name] {
				if !plainText(name) {
					return encodeRecipientsJSON(rs)
				}
				seen[name] = true
				names = append(names, name)
				size += len(name) + 8
			}
			if !plainText(v) {
				return encodeRecipientsJSON(rs)
			}
			size += len(v) + 8
		}
		if !plainText(rs[i].Receiver) || !plainText(rs[i].Room) {
			return encodeRecipientsJSON(rs)
		}
		size += len(rs[i].Receiver) + len(rs[i].Room) + 16
	}
	// Sorted, so that the same recipients always encode to the same text.
	slices.Sort(names)
	b := make([]byte, 0, size)
	b = append(b, recipientsV2...)
	b = strconv.AppendInt(b, int64(len(names)), 10)
	b = append(b, ';')
	for _, n := range names {
		b = appendToken(b, n)
	}
	b = append(b, ';')
	b = strconv.AppendInt(b, int64(len(rs)), 10)
	b = append(b, ';')
	for i := range rs {
		r := &rs[i]
		if r.Vars == nil {
			b = append(b, 'n')
		} else {
			b = append(b, 'm')
		}
		b = appendToken(b, r.Receiver)
		b = appendToken(b, r.Room)
		for _, n := range names {
			if v, ok := r.Vars[n]; ok {
				b = appendToken(b, v)
			} else {
				b = append(b, '-')
			}
		}
	}
	return string(b)
}

// plainText reports whether s can be written into a text column as it is.
func plainText(s string) bool {
	return strings.IndexByte(s, 0) < 0 && utf8.ValidString(s)
}

func appendToken(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

var errMalformedRecipients = errors.New("malformed recipients column")

// decodeRecipients reads what encodeRecipients wrote, or the JSON array
// of earlier versions.
func decodeRecipients(s string) ([]store.Recipient, error) {
	if !strings.HasPrefix(s, recipientsV2) {
		return decodeRecipientsJSON(s)
	}
	d := recipientDecoder{s: s, pos: len(recipientsV2)}
	nNames := d.count(';')
	names := make([]string, 0, min(nNames, 64))
	for range nNames {
		if d.err != nil {
			break
		}
		names = append(names, d.token())
	}
	d.expect(';')
	n := d.count(';')
	if d.err != nil {
		return nil, d.err
	}
	out := make([]store.Recipient, 0, min(n, len(s)))
	for range n {
		var r store.Recipient
		switch d.next() {
		case 'm':
			r.Vars = make(map[string]string, len(names))
		case 'n':
		default:
			d.err = errMalformedRecipients
		}
		r.Receiver = d.token()
		r.Room = d.token()
		for _, name := range names {
			if d.err != nil {
				break
			}
			if d.peek() == '-' {
				d.pos++
				continue
			}
			v := d.token()
			if r.Vars == nil {
				d.err = errMalformedRecipients
				break
			}
			r.Vars[name] = v
		}
		if d.err != nil {
			return nil, d.err
		}
		out = append(out, r)
	}
	if d.pos != len(s) {
		return nil, errMalformedRecipients
	}
	return out, nil
}

type recipientDecoder struct {
	s   string
	pos int
	err error
}

func (d *recipientDecoder) peek() byte {
	if d.err != nil || d.pos >= len(d.s) {
		d.err = errMalformedRecipients
		return 0
	}
	return d.s[d.pos]
}

func (d *recipientDecoder) next() byte {
	c := d.peek()
	if d.err == nil {
		d.pos++
	}
	return c
}

func (d *recipientDecoder) expect(c byte) {
	if d.next() != c {
		d.err = errMalformedRecipients
	}
}

// count reads a decimal number ended by end.
func (d *recipientDecoder) count(end byte) int {
	n, digits := 0, 0
	for d.err == nil {
		c := d.next()
		if c == end && digits > 0 {
			return n
		}
		if c < '0' || c > '9' || digits == 9 {
			d.err = errMalformedRecipients
			return 0
		}
		n = n*10 + int(c-'0')
		digits++
	}
	return 0
}

// token reads "len:bytes" and returns the bytes as a slice of d.s.
func (d *recipientDecoder) token() string {
	n := d.count(':')
	if d.err != nil || n > len(d.s)-d.pos {
		d.err = errMalformedRecipients
		return ""
	}
	v := d.s[d.pos : d.pos+n]
	d.pos += n
	return v
}

// recipientJSON is how chunks stored by earlier versions hold their
// recipients: store.Recipient with omitzero on Vars, so that nil and
// empty maps come back as they went in.
type recipientJSON struct {
	Receiver string            `json:"receiver,omitempty"`
	Room     string            `json:"room,omitempty"`
	Vars     map[string]string `json:"vars,omitzero"`
}

func encodeRecipientsJSON(rs []store.Recipient) string {
	out := make([]recipientJSON, len(rs))
	for i, r := range rs {
		out[i] = recipientJSON(r)
	}
	b, _ := json.Marshal(out) // maps of strings always marshal
	return string(b)
}

func decodeRecipientsJSON(s string) ([]store.Recipient, error) {
	var rs []recipientJSON
	if err := json.Unmarshal([]byte(s), &rs); err != nil {
		return nil, err
	}
	out := make([]store.Recipient, len(rs))
	for i, r := range rs {
		out[i] = store.Recipient(r)
	}
	return out, nil
}
