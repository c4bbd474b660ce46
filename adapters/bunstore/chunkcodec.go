package bunstore

// The compact text forms of a chunk's recipients and outcomes.

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/chatbatch/chatbatch/store"
)

// A chunk's recipients are stored in one text column in a compact,
// length-prefixed form rather than as JSON: writing and reading it costs
// no escaping and no per-field allocation (the decoded strings are
// slices of the column's one string), which matters at 10,000
// recipients per request and 500 per chunk. It is text, so it fits the
// column type on every database (and a chunk of more than a few
// recipients is then compressed, see packText):
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
// package batch never lets such a request in), as JSON; either is then
// packed (see packText).
func encodeRecipients(rs []store.Recipient) string {
	return packText(compactRecipients(rs))
}

func compactRecipients(rs []store.Recipient) []byte {
	var names []string
	seen := map[string]bool{}
	size := len(recipientsV2) + 16
	for i := range rs {
		for name, v := range rs[i].Vars {
			if !seen[name] {
				if !plainText(name) {
					return recipientsJSON(rs)
				}
				seen[name] = true
				names = append(names, name)
				size += len(name) + 8
			}
			if !plainText(v) {
				return recipientsJSON(rs)
			}
			size += len(v) + 8
		}
		if !plainText(rs[i].Receiver) || !plainText(rs[i].Room) {
			return recipientsJSON(rs)
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
	return b
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
	s, err := unpackText(s)
	if err != nil {
		return nil, err
	}
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

func recipientsJSON(rs []store.Recipient) []byte {
	out := make([]recipientJSON, len(rs))
	for i, r := range rs {
		out[i] = recipientJSON(r)
	}
	b, _ := json.Marshal(out) // maps of strings always marshal
	return b
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

// A chunk's outcomes are stored like its recipients, in a compact text
// form instead of JSON (a chunk of 500 takes about a third of the bytes:
// the column is written once per chunk, on the worker's hot path):
//
//	~2;2;s#xMj8yOAuV24jn4Hp+akNIQ0+16:batch-20261130-00:f0:0+0:16:room was deleted
//
// that is "~2;", the number of outcomes, then per outcome its status ("s"
// sent, "f" failed, "c" canceled, or "x" and the status written out),
// its room (here c4c8fcc8e02e576e239f81e9f9a90d21, written as a hex
// room ID, below), its message ID as the length of the prefix it shares with
// the previous message ID, "+" and the rest (message IDs of a chunk
// differ only in their last digits), and its error. Strings are written
// as in the recipients' form. Outcomes stored by earlier versions are
// JSON and are still read.
//
// When any outcome has a push state, the form is "~3;": the same, and
// after each outcome's error its push state: "-" none, "p" pending, "s"
// sent, "f" failed and the push error, or "x" and the state written out.
// Chunks without push states keep the "~2;" form (and its bytes).
//
// A room ID of 32 lowercase hexadecimal digits — a one-on-one room's,
// as store.DirectRoomID names it — is written as "#" and the 22 base64
// characters (standard alphabet, no padding) of its 16 bytes instead of
// as a string: 23 bytes instead of 35. A chunk whose rooms are mostly
// such IDs is then stored unpacked, at about the bytes DEFLATE got (28
// a recipient packed, 32 this way), without its CPU: DEFLATE was the
// largest part of a chunk's bookkeeping on the worker (docs/benchmarks.md),
// and base64 text shrinks by little more than base64 grows it again.
const (
	outcomesV2  = "~2;"
	outcomesV3  = "~3;"
	hexRoomMark = '#'
	hexRoomLen  = 32
)

var hexRoomText = base64.RawStdEncoding // 16 bytes → 22 characters

// encodeOutcomes writes os in the compact form, or as JSON when a string
// cannot be written as it is (see encodeRecipients), packed (see
// packText) unless most rooms are written as hex room IDs.
func encodeOutcomes(os []store.Outcome) string {
	b, hexRooms := compactOutcomes(os)
	if hexRooms > 0 && 2*hexRooms >= len(os) {
		return string(b)
	}
	return packText(b)
}

// hexDigit maps a lowercase hexadecimal digit to its value and every
// other byte to 0xff.
var hexDigit = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
	}
	return t
}()

// hexRoomBytes returns the bytes of room if it is 32 lowercase
// hexadecimal digits.
func hexRoomBytes(room string) (raw [hexRoomLen / 2]byte, ok bool) {
	if len(room) != hexRoomLen {
		return raw, false
	}
	for i := range raw {
		hi, lo := hexDigit[room[2*i]], hexDigit[room[2*i+1]]
		if hi|lo > 0xf {
			return raw, false
		}
		raw[i] = hi<<4 | lo
	}
	return raw, true
}

// appendRoom writes an outcome's room: a hex room ID as hexRoomMark and
// its bytes in base64, anything else as a token. It reports which.
func appendRoom(b []byte, room string) ([]byte, bool) {
	raw, ok := hexRoomBytes(room)
	if !ok {
		return appendToken(b, room), false
	}
	b = append(b, hexRoomMark)
	return hexRoomText.AppendEncode(b, raw[:]), true
}

// compactOutcomes returns os in the compact form (or JSON) and how many
// rooms it wrote as hex room IDs.
func compactOutcomes(os []store.Outcome) ([]byte, int) {
	size := len(outcomesV2) + 16
	push := false
	for i := range os {
		o := &os[i]
		if !plainText(string(o.Status)) || !plainText(o.Room) || !plainText(o.MessageID) || !plainText(o.Error) ||
			!plainText(string(o.Push)) || !plainText(o.PushError) {
			b, _ := json.Marshal(os) // strings always marshal
			return b, 0
		}
		push = push || o.Push != "" || o.PushError != ""
		size += len(o.Room) + len(o.MessageID) + len(o.Error) + len(o.PushError) + 32
	}
	b := make([]byte, 0, size)
	if push {
		b = append(b, outcomesV3...)
	} else {
		b = append(b, outcomesV2...)
	}
	b = strconv.AppendInt(b, int64(len(os)), 10)
	b = append(b, ';')
	prev := ""
	hexRooms := 0
	for i := range os {
		o := &os[i]
		switch o.Status {
		case store.OutcomeSent:
			b = append(b, 's')
		case store.OutcomeFailed:
			b = append(b, 'f')
		case store.OutcomeCanceled:
			b = append(b, 'c')
		default:
			b = append(b, 'x')
			b = appendToken(b, string(o.Status))
		}
		var isHex bool
		if b, isHex = appendRoom(b, o.Room); isHex {
			hexRooms++
		}
		shared := commonPrefix(prev, o.MessageID)
		b = strconv.AppendInt(b, int64(shared), 10)
		b = append(b, '+')
		b = appendToken(b, o.MessageID[shared:])
		prev = o.MessageID
		b = appendToken(b, o.Error)
		if push {
			switch {
			case o.Push == "" && o.PushError == "":
				b = append(b, '-')
			case o.Push == store.PushPending && o.PushError == "":
				b = append(b, 'p')
			case o.Push == store.PushSent && o.PushError == "":
				b = append(b, 's')
			case o.Push == store.PushFailed:
				b = append(b, 'f')
				b = appendToken(b, o.PushError)
			default:
				b = append(b, 'x')
				b = appendToken(b, string(o.Push))
				b = appendToken(b, o.PushError)
			}
		}
	}
	return b, hexRooms
}

// commonPrefix returns the length of the longest common prefix of a and
// b that ends on a UTF-8 character boundary of b.
func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	for n > 0 && n < len(b) && !utf8.RuneStart(b[n]) {
		n--
	}
	return n
}

// decodeOutcomes reads what encodeOutcomes wrote, or the JSON of earlier
// versions.
func decodeOutcomes(s string) ([]store.Outcome, error) {
	s, err := unpackText(s)
	if err != nil {
		return nil, err
	}
	push := strings.HasPrefix(s, outcomesV3)
	if !push && !strings.HasPrefix(s, outcomesV2) {
		var out []store.Outcome
		if err := json.Unmarshal([]byte(s), &out); err != nil {
			return nil, err
		}
		return out, nil
	}
	d := recipientDecoder{s: s, pos: len(outcomesV2)}
	n := d.count(';')
	if d.err != nil {
		return nil, errMalformedOutcomes
	}
	out := make([]store.Outcome, 0, min(n, len(s)))
	prev := ""
	// Hex room IDs are written out into one buffer; the outcomes' rooms
	// are slices of it, made a string once at the end.
	var hexRooms []byte
	var hexAt []int // indexes in out of the outcomes whose room is in hexRooms
	for range n {
		var o store.Outcome
		switch d.next() {
		case 's':
			o.Status = store.OutcomeSent
		case 'f':
			o.Status = store.OutcomeFailed
		case 'c':
			o.Status = store.OutcomeCanceled
		case 'x':
			o.Status = store.OutcomeStatus(d.token())
		default:
			d.err = errMalformedOutcomes
		}
		if d.peek() == hexRoomMark {
			hexRooms = d.hexRoom(hexRooms, n)
			hexAt = append(hexAt, len(out))
		} else {
			o.Room = d.token()
		}
		shared := d.count('+')
		rest := d.token()
		if d.err != nil || shared > len(prev) {
			return nil, errMalformedOutcomes
		}
		if shared == 0 {
			o.MessageID = rest
		} else {
			o.MessageID = prev[:shared] + rest
		}
		prev = o.MessageID
		o.Error = d.token()
		if push {
			switch d.next() {
			case '-':
			case 'p':
				o.Push = store.PushPending
			case 's':
				o.Push = store.PushSent
			case 'f':
				o.Push, o.PushError = store.PushFailed, d.token()
			case 'x':
				o.Push = store.PushStatus(d.token())
				o.PushError = d.token()
			default:
				d.err = errMalformedOutcomes
			}
		}
		if d.err != nil {
			return nil, errMalformedOutcomes
		}
		out = append(out, o)
	}
	if d.pos != len(s) {
		return nil, errMalformedOutcomes
	}
	rooms := string(hexRooms)
	for k, i := range hexAt {
		out[i].Room = rooms[k*hexRoomLen : (k+1)*hexRoomLen]
	}
	return out, nil
}

// hexRoom reads a room written by appendRoom as a hex room ID and
// appends its hex digits to buf (made on first use for the n rooms the
// column says it holds, as many as its length allows: a damaged count
// must not allocate more than the column could hold).
func (d *recipientDecoder) hexRoom(buf []byte, n int) []byte {
	d.next() // hexRoomMark
	var raw [hexRoomLen / 2]byte
	size := hexRoomText.EncodedLen(len(raw))
	end := d.pos + size
	if d.err != nil || end > len(d.s) {
		d.err = errMalformedOutcomes
		return buf
	}
	if k, err := hexRoomText.Decode(raw[:], []byte(d.s[d.pos:end])); err != nil || k != len(raw) {
		d.err = errMalformedOutcomes
		return buf
	}
	d.pos = end
	if buf == nil {
		buf = make([]byte, 0, min(n, len(d.s)/(1+size))*hexRoomLen)
	}
	return hex.AppendEncode(buf, raw[:])
}

var errMalformedOutcomes = errors.New("malformed outcomes column")

// A chunk of hundreds of recipients is stored compressed: "~z;" and the
// base64 (standard alphabet, no padding) of the raw DEFLATE (RFC 1951)
// of its compact or JSON form. The chunks are most of chatbatch's
// bookkeeping, and their text repeats itself (variable values that
// differ in a few digits, message IDs, the room IDs' hex): the
// recipients of a chunk of 500 with a two-variable template take a
// quarter of their compact form's bytes (41 → 10 bytes a recipient), its
// outcomes in rooms named by the request less than a third. (Outcomes in
// one-on-one rooms are not packed: see hexRoomMark.) PostgreSQL's TOAST
// compressed these columns, less well, and now leaves them as they are
// (schema version 13); InnoDB and SQLite store them as they come. DEFLATE
// at its fastest level costs about 0.2 ms a chunk of 500 to write and
// 0.1 ms to read, measured alone; two to three times that in a busy
// worker. Base64 keeps the
// column text, as on every database it is. Text under packAbove bytes,
// and text that would not shrink, is stored as it is, so small chunks
// stay readable in a SQL shell; chunks stored before this form are read
// as they were.
const (
	packedPrefix = "~z;"
	packAbove    = 1024
	// maxUnpacked bounds what a packed column may inflate to: more than
	// any chunk holds (a request is at most batch.Config.MaxBodyBytes),
	// so a damaged column fails to decode instead of filling memory.
	maxUnpacked = 256 << 20
)

var packed = base64.RawStdEncoding

// flateWriters holds DEFLATE writers at their fastest level: each holds
// tables of several hundred KiB, too much to make for every chunk.
var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed) // BestSpeed is a valid level
	return w
}}

var flateReaders sync.Pool

// packText returns b as the column's text: packed when b is at least
// packAbove bytes and packing shrinks it, else b as it is.
func packText(b []byte) string {
	if len(b) < packAbove {
		return string(b)
	}
	var z bytes.Buffer
	z.Grow(len(b) / 2)
	w := flateWriters.Get().(*flate.Writer)
	w.Reset(&z)
	_, err := w.Write(b) // a bytes.Buffer does not fail
	if err == nil {
		err = w.Close()
	}
	flateWriters.Put(w)
	n := len(packedPrefix) + packed.EncodedLen(z.Len())
	if err != nil || n >= len(b) {
		return string(b)
	}
	out := make([]byte, n)
	copy(out, packedPrefix)
	packed.Encode(out[len(packedPrefix):], z.Bytes())
	return string(out)
}

var errMalformedPacked = errors.New("malformed packed chunk column")

// unpackText returns what packText packed, or s when it is not packed.
func unpackText(s string) (string, error) {
	if !strings.HasPrefix(s, packedPrefix) {
		return s, nil
	}
	z, err := packed.DecodeString(s[len(packedPrefix):])
	if err != nil {
		return "", fmt.Errorf("%w: %v", errMalformedPacked, err)
	}
	var r io.ReadCloser
	if v := flateReaders.Get(); v != nil {
		r = v.(io.ReadCloser)
		if err := r.(flate.Resetter).Reset(bytes.NewReader(z), nil); err != nil {
			return "", fmt.Errorf("%w: %v", errMalformedPacked, err)
		}
	} else {
		r = flate.NewReader(bytes.NewReader(z))
	}
	var out bytes.Buffer
	out.Grow(4 * len(z))
	n, err := out.ReadFrom(io.LimitReader(r, maxUnpacked+1))
	flateReaders.Put(r)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %v", errMalformedPacked, err)
	case n > maxUnpacked:
		return "", fmt.Errorf("%w: more than %d bytes", errMalformedPacked, maxUnpacked)
	case bytes.HasPrefix(out.Bytes(), []byte(packedPrefix)):
		return "", fmt.Errorf("%w: packed twice", errMalformedPacked)
	}
	return out.String(), nil
}
