package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/go-playground/validator/v10"

	"github.com/chatbatch/chatbatch/render"
	"github.com/chatbatch/chatbatch/store"
)

// sendRequest is a decoded POST /messages/batch body.
type sendRequest struct {
	Message        string          `json:"message" validate:"required"`
	MessageType    string          `json:"messageType" validate:"required,max=64"`
	Sender         string          `json:"sender" validate:"omitempty,chatid"`
	Push           bool            `json:"push"`
	SkipTotalBadge bool            `json:"skipTotalBadge"`
	Extra          json.RawMessage `json:"extra"`
	// Paras are the recipients, para i as recipient i. Each para's own
	// rules (receiver or room, valid IDs) are checked by validate in plain
	// code: validator's dive over 10,000 paras cost more than decoding them.
	Paras []store.Recipient `json:"paras" validate:"required,min=1"`
	// SendAt is when to send; zero means now.
	SendAt time.Time `json:"sendAt"`
	// StrictVariables asks for strict variable checking for this request.
	StrictVariables bool `json:"strictVariables"`
	// RatePerMinute, when positive, paces the batch: no more recipients
	// are sent in a minute.
	RatePerMinute int `json:"ratePerMinute"`

	// fields holds allow-listed extra fields, compacted.
	fields map[string]json.RawMessage
	// extra is the compiled Extra, nil when there is none; compiled while
	// decoding, before the paras' names are known, it is compiled again
	// with them by templates when declared is not empty.
	extra *render.JSONTemplate
	// declared holds the names the paras declare that are not identifier
	// names (render.IsVarName): "$1$", "$first name$". Identifier names
	// are tokens whether declared or not, so an empty set (the usual case)
	// compiles as before.
	declared render.Declared
	// text is the message compiled with declared, once (see templates).
	text *render.Template
	// present records which top-level keys the body had (null counts as absent).
	present map[string]bool
}

// knownFields are the top-level fields of the API.
var knownFields = map[string]bool{
	"message": true, "messageType": true, "sender": true, "push": true,
	"skipTotalBadge": true, "extra": true, "paras": true, "sendAt": true, "strictVariables": true,
	"ratePerMinute": true,
}

// fieldHints suggest the right name for likely mistakes.
var fieldHints = map[string]string{
	"type": "messageType", "msgType": "messageType", "message_type": "messageType",
	"text": "message", "msg": "message", "body": "message", "content": "message",
	"receivers": "paras", "recipients": "paras", "to": "paras", "params": "paras",
	"from": "sender", "skip_total_badge": "skipTotalBadge",
	"send_at": "sendAt", "scheduleAt": "sendAt", "scheduledAt": "sendAt", "strict": "strictVariables",
	"rate": "ratePerMinute", "throttle": "ratePerMinute", "throttle_rate_per_minute": "ratePerMinute", "rate_per_minute": "ratePerMinute",
}

var paraHints = map[string]string{
	"user": "receiver", "userId": "receiver", "userID": "receiver", "to": "receiver", "receiverId": "receiver",
	"roomId": "room", "roomID": "room", "room_id": "room",
}

// bodyError is an INVALID_BODY error about one place in the body.
func bodyError(field, format string, args ...any) *apiError {
	reason := fmt.Sprintf(format, args...)
	msg := reason
	if field != "" {
		msg = field + ": " + reason
	}
	return newError(http.StatusBadRequest, CodeInvalidBody, "%s", msg).with(Detail{Field: field, Reason: reason})
}

// readBody reads at most limit bytes of r's body.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, newError(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "the body is larger than %d bytes", limit)
	case err != nil:
		return nil, bodyError("", "the body could not be read: %v", err)
	case len(bytes.TrimSpace(body)) == 0:
		return nil, bodyError("", "the body is empty; send a JSON object")
	}
	return body, nil
}

// decodeSend parses body strictly: one JSON object, valid UTF-8, no NUL,
// no duplicate keys, no unknown fields, no trailing data, every value of
// the documented type. It stops at the first problem.
//
// It reads the body with jsontext's streaming decoder, which allocates
// nothing per token; strings become Go strings only where they are kept.
// The paras' own rules (receiver or room, valid IDs) are left to validate.
func decodeSend(body []byte, maxRecipients int, extraFields map[string]bool) (*sendRequest, *apiError) {
	if i := bytes.IndexByte(body, 0); i >= 0 {
		return nil, bodyError("", "the body contains a NUL byte at offset %d", i)
	}
	if !utf8.Valid(body) {
		return nil, bodyError("", "the body is not valid UTF-8 (first bad byte at offset %d)", invalidUTF8Offset(body))
	}
	d := &decoder{
		// A bytes.Buffer is read in place, without a copy.
		dec: jsontext.NewDecoder(bytes.NewBuffer(body),
			// Both are the defaults; they are part of the contract, so
			// they are spelled out. Raw invalid UTF-8 never gets this far,
			// so AllowInvalidUTF8(false) refuses escaped unpaired
			// surrogates ("\ud800"), which cannot be represented in UTF-8.
			jsontext.AllowDuplicateNames(false), jsontext.AllowInvalidUTF8(false)),
		body: body,
	}
	req := &sendRequest{present: map[string]bool{}}
	if err := d.top(req, maxRecipients, extraFields); err != nil {
		return nil, err
	}
	req.declared = d.declared
	if _, err := d.dec.ReadToken(); err != io.EOF {
		return nil, bodyError("", "unexpected data after the JSON object at offset %d", trailingOffset(body))
	}
	return req, nil
}

// decoder reads one request body. Paths for error messages ("paras[12].receiver")
// are built only when there is an error.
type decoder struct {
	dec  *jsontext.Decoder
	body []byte
	// buf holds the unescaped text of the last string read, when it had
	// escapes; strings without escapes are read in place.
	buf []byte
	// vars interns the variable keys of paras: "$name$" → "name". The same
	// few keys repeat in every para; each is allocated once.
	vars map[string]string
	// nvars is the number of variables of the last para, to size the next
	// one's map.
	nvars int
	// declared collects the names of the paras' keys that are not
	// identifier names (sendRequest.declared).
	declared render.Declared
}

// maxInternedVars bounds decoder.vars; keys past it are allocated per use.
const maxInternedVars = 256

// next reads the next token. For a string it returns the unescaped text,
// for a number its literal text; both are valid until the next read. For
// other kinds it returns nil: literals need no text, and '{' and '['
// are only the start of their value.
//
// Every value is read completely before its kind is judged, as
// encoding/json's Decoder.Token did, so that a malformed value is a syntax
// error rather than a type error.
func (d *decoder) next() (jsontext.Kind, []byte, error) {
	switch k := d.dec.PeekKind(); k {
	case '"':
		v, err := d.dec.ReadValue()
		if err != nil {
			return 0, nil, err
		}
		s := v[1 : len(v)-1]
		if bytes.IndexByte(s, '\\') >= 0 {
			if d.buf, err = jsontext.AppendUnquote(d.buf[:0], v); err != nil {
				return 0, nil, err // unreachable: the decoder checked v
			}
			s = d.buf
		}
		return k, s, nil
	case '0':
		v, err := d.dec.ReadValue()
		if err != nil {
			return 0, nil, err
		}
		return k, v, nil
	default: // literals, delimiters, and errors PeekKind holds back
		tok, err := d.dec.ReadToken()
		if err != nil {
			return 0, nil, err
		}
		return tok.Kind(), nil, nil
	}
}

// key reads an object key; the text is valid until the next read. Like
// encoding/json's Decoder.Token, it refuses at once what does not start
// as a string, even where the body ends before jsontext could say what it
// is ("{n").
func (d *decoder) key() ([]byte, error) {
	if k := d.dec.PeekKind(); k != '"' && k != 0 {
		return nil, errNotKey
	}
	_, b, err := d.next()
	return b, err
}

var errNotKey = errors.New("an object key must be a string")

// more reports whether the object or array being read has another member,
// exactly as encoding/json's Decoder.More did: the next byte that is not
// white space is neither '}' nor ']' (a ',' counts as more; the read that
// follows checks it).
func (d *decoder) more() bool {
	for _, c := range d.dec.UnreadBuffer() {
		switch c {
		case ' ', '\t', '\n', '\r':
		case '}', ']':
			return false
		default:
			return true
		}
	}
	return false
}

// fail turns an error of the jsontext decoder into an INVALID_BODY. path is
// where the read happened: the value's path, or for a key (isKey) the
// object's path.
func (d *decoder) fail(err error, path string, isKey bool) *apiError {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		if se.Err == jsontext.ErrDuplicateName {
			key := se.JSONPointer.LastToken()
			return bodyError(join(path, key), "duplicate key %q", key)
		}
		if unpairedSurrogateAt(d.body, se.ByteOffset) {
			if isKey {
				return bodyError(path, "a key contains an unpaired UTF-16 surrogate escape")
			}
			return bodyError(path, "contains an unpaired UTF-16 surrogate escape")
		}
	}
	return syntaxError(d.body, err)
}

// syntaxError reports err, a syntax error or an early end of body, the way
// encoding/json would: a full parse of the body (only on this error path)
// names the line and column of the offending byte, in encoding/json's words.
func syntaxError(body []byte, err error) *apiError {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return bodyError("", "invalid JSON: the body ends before the JSON value does")
	}
	var se *json.SyntaxError
	if errors.As(json.Unmarshal(body, new(any)), &se) {
		line, col := position(body, max(se.Offset-1, 0))
		return bodyError("", "invalid JSON at line %d, column %d: %s", line, col+1, se.Error())
	}
	return bodyError("", "invalid JSON: %v", err)
}

// unpairedSurrogateAt reports whether body has, at off, a \u escape of a
// UTF-16 surrogate that does not start a valid pair: what jsontext refuses
// as invalid UTF-8 and encoding/json turned into U+FFFD.
func unpairedSurrogateAt(body []byte, off int64) bool {
	r1, ok := hexEscape(body, off)
	if !ok || !utf16.IsSurrogate(r1) {
		return false
	}
	r2, ok := hexEscape(body, off+6)
	return !ok || utf16.DecodeRune(r1, r2) == utf8.RuneError
}

// hexEscape decodes the \uXXXX escape at body[off:].
func hexEscape(body []byte, off int64) (rune, bool) {
	if off < 0 || off+6 > int64(len(body)) || body[off] != '\\' || body[off+1] != 'u' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(body[off+2:off+6]), 16, 16)
	return rune(v), err == nil
}

// trailingOffset returns the offset that encoding/json's Decoder reported
// after the token following the top-level object, which today's messages
// name; it runs only on that error path.
func trailingOffset(body []byte) int64 {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if dec.Decode(&raw) == nil {
		_, _ = dec.Token()
	}
	return dec.InputOffset()
}

func (d *decoder) top(req *sendRequest, maxRecipients int, extraFields map[string]bool) *apiError {
	k, _, err := d.next()
	if err != nil {
		return d.fail(err, "", false)
	}
	if k != '{' {
		return bodyError("", "the body must be a JSON object, not %s", describe(k))
	}
	for d.more() {
		b, err := d.key()
		if err != nil {
			return d.fail(err, "", true)
		}
		if bytes.IndexByte(b, 0) >= 0 {
			return bodyError("", "a key contains a NUL character")
		}
		if err := d.topField(req, string(b), maxRecipients, extraFields); err != nil {
			return err
		}
	}
	if _, err := d.dec.ReadToken(); err != nil { // the closing brace
		return d.fail(err, "", false)
	}
	return nil
}

func (d *decoder) topField(req *sendRequest, key string, maxRecipients int, extraFields map[string]bool) *apiError {
	switch key {
	case "message":
		return d.str(key, &req.Message, req.present)
	case "messageType":
		return d.str(key, &req.MessageType, req.present)
	case "sender":
		return d.str(key, &req.Sender, req.present)
	case "push":
		return d.boolean(key, &req.Push, req.present)
	case "skipTotalBadge":
		return d.boolean(key, &req.SkipTotalBadge, req.present)
	case "extra":
		tmpl, kind, err := d.rawJSON(key)
		if err != nil || tmpl == nil {
			return err
		}
		if kind != '{' {
			return bodyError(key, "must be a JSON object, not %s", describe(kind))
		}
		req.Extra, req.extra = tmpl.Compact(), tmpl
		req.present[key] = true
		return nil
	case "paras":
		return d.paras(req, maxRecipients)
	case "sendAt":
		return d.time(key, &req.SendAt, req.present)
	case "strictVariables":
		return d.boolean(key, &req.StrictVariables, req.present)
	case "ratePerMinute":
		return d.positiveInt(key, &req.RatePerMinute, req.present)
	}
	if extraFields[key] {
		tmpl, _, err := d.rawJSON(key)
		if err != nil || tmpl == nil {
			return err
		}
		if req.fields == nil {
			req.fields = map[string]json.RawMessage{}
		}
		req.fields[key] = tmpl.Compact()
		return nil
	}
	if hint, ok := fieldHints[key]; ok {
		return bodyError(key, "unknown field %q; did you mean %q?", key, hint)
	}
	if _, ok := render.ParseKey(key); ok {
		return bodyError(key, "unknown field %q; template variables go in each element of paras", key)
	}
	return bodyError(key, "unknown field %q", key)
}

// str reads a string value; null leaves *dst unset.
func (d *decoder) str(path string, dst *string, present map[string]bool) *apiError {
	k, b, err := d.next()
	if err != nil {
		return d.fail(err, path, false)
	}
	switch k {
	case 'n':
		return nil
	case '"':
		if bytes.IndexByte(b, 0) >= 0 {
			return bodyError(path, "contains a NUL character")
		}
		*dst = string(b)
		present[path] = true
		return nil
	}
	return bodyError(path, "must be a string, not %s", describe(k))
}

func (d *decoder) boolean(path string, dst *bool, present map[string]bool) *apiError {
	k, _, err := d.next()
	if err != nil {
		return d.fail(err, path, false)
	}
	switch k {
	case 'n':
		return nil
	case 't', 'f':
		*dst = k == 't'
		present[path] = true
		return nil
	}
	return bodyError(path, "must be true or false, not %s", describe(k))
}

// positiveInt reads a whole number from 1 to 2³¹−1; null leaves *dst
// zero.
func (d *decoder) positiveInt(path string, dst *int, present map[string]bool) *apiError {
	k, b, err := d.next()
	if err != nil {
		return d.fail(err, path, false)
	}
	switch k {
	case 'n':
		return nil
	case '0':
		n, perr := strconv.ParseInt(string(b), 10, 32)
		if errors.Is(perr, strconv.ErrRange) && b[0] != '-' {
			return bodyError(path, "%s is too large: the most is %d", b, math.MaxInt32)
		}
		if perr != nil || n < 1 {
			return bodyError(path, "%s is not a whole number of at least 1", b)
		}
		*dst = int(n)
		present[path] = true
		return nil
	}
	return bodyError(path, "must be a whole number of at least 1, not %s", describe(k))
}

// time reads an RFC 3339 string or a number of Unix milliseconds; null
// leaves *dst zero.
func (d *decoder) time(path string, dst *time.Time, present map[string]bool) *apiError {
	k, b, err := d.next()
	if err != nil {
		return d.fail(err, path, false)
	}
	switch k {
	case 'n':
		return nil
	case '"':
		t, perr := time.Parse(time.RFC3339Nano, string(b))
		if perr != nil {
			return bodyError(path, "%q is not an RFC 3339 time such as \"2026-04-10T14:00:00+08:00\"", b)
		}
		*dst = t.UTC()
	case '0':
		ms, perr := strconv.ParseInt(string(b), 10, 64)
		if perr != nil || ms < 0 || ms > maxUnixMillis {
			return bodyError(path, "%s is not a time in Unix milliseconds", b)
		}
		*dst = time.UnixMilli(ms).UTC()
	default:
		return bodyError(path, "must be an RFC 3339 string or Unix milliseconds, not %s", describe(k))
	}
	present[path] = true
	return nil
}

// maxUnixMillis is 9999-12-31T23:59:59.999Z.
const maxUnixMillis = 253402300799999

// rawJSON reads any JSON value and compiles it strictly (duplicate keys
// and NUL characters at any depth are errors). null returns nil, 0, nil.
// kind is the value's kind.
func (d *decoder) rawJSON(path string) (*render.JSONTemplate, jsontext.Kind, *apiError) {
	start := d.dec.InputOffset() // just after the key
	raw, err := d.dec.ReadValue()
	if err != nil {
		return nil, 0, d.rawFail(start, path, err)
	}
	if raw.Kind() == 'n' {
		return nil, 0, nil
	}
	tmpl, cerr := render.CompileJSON(raw)
	if cerr != nil {
		return nil, 0, compileError(path, cerr)
	}
	return tmpl, raw.Kind(), nil
}

func compileError(path string, err error) *apiError {
	var je *render.JSONError
	if errors.As(err, &je) {
		return bodyError(joinPath(path, je.Path), "%s", je.Reason)
	}
	return bodyError(path, "%v", err)
}

// rawFail reports why the value after the key that ends at start could not
// be read, as today: encoding/json reads the value first (a syntax error
// wins), then render.CompileJSON names the place of what jsontext refused
// (a duplicate key or an unpaired surrogate at any depth). It runs only on
// this error path.
func (d *decoder) rawFail(start int64, path string, err error) *apiError {
	rest := d.body[start:]
	rest = rest[len(rest)-len(bytes.TrimLeft(rest, " \t\r\n")):]
	if len(rest) == 0 || rest[0] != ':' {
		return syntaxError(d.body, err)
	}
	var raw json.RawMessage
	if jerr := json.NewDecoder(bytes.NewReader(rest[1:])).Decode(&raw); jerr != nil {
		return syntaxError(d.body, jerr)
	}
	if _, cerr := render.CompileJSON(raw); cerr != nil {
		return compileError(path, cerr)
	}
	return d.fail(err, path, false)
}

func (d *decoder) paras(req *sendRequest, maxRecipients int) *apiError {
	k, _, err := d.next()
	if err != nil {
		return d.fail(err, "paras", false)
	}
	if k == 'n' {
		return nil
	}
	if k != '[' {
		return bodyError("paras", "must be an array of recipient objects, not %s", describe(k))
	}
	req.present["paras"] = true
	req.Paras = []store.Recipient{}
	start := d.dec.InputOffset()
	for d.more() {
		i := len(req.Paras)
		if i == maxRecipients {
			return newError(http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
				"paras has more than %d recipients, the most one request may carry; split it into several requests", maxRecipients)
		}
		if i == 1 {
			req.Paras = slices.Grow(req.Paras, d.estimateParas(start, maxRecipients)-1)
		}
		req.Paras = append(req.Paras, store.Recipient{})
		if err := d.para(i, &req.Paras[i]); err != nil {
			return err
		}
	}
	if _, err := d.dec.ReadToken(); err != nil { // the closing bracket
		return d.fail(err, "paras", false)
	}
	return nil
}

// estimateParas guesses how many paras the array has, from the size of
// the first one (which started at start) and the bytes left, so that the
// recipients are allocated once instead of doubling 14 times for 10,000.
// Paras of one request are alike; a wrong guess costs a copy or some
// capacity. The guess is at most maxRecipients, and at most what the bytes
// left can hold of the smallest valid para (`,{"room":"r"}`, 13 bytes), so
// that a small first para cannot make a short body allocate much.
func (d *decoder) estimateParas(start int64, maxRecipients int) int {
	end := d.dec.InputOffset()
	left := int64(len(d.body)) - end
	n := 1 + left/max(end-start, 1)
	return int(min(n+n/64+1, 1+left/13, int64(maxRecipients)))
}

// paraPath is the path of para i.
func paraPath(i int) string { return "paras[" + strconv.Itoa(i) + "]" }

// para reads para i into p.
func (d *decoder) para(i int, p *store.Recipient) *apiError {
	k, _, err := d.next()
	if err != nil {
		return d.fail(err, paraPath(i), false)
	}
	if k != '{' {
		return bodyError(paraPath(i), "must be an object, not %s", describe(k))
	}
	for d.more() {
		key, err := d.key()
		if err != nil {
			return d.fail(err, paraPath(i), true)
		}
		if bytes.IndexByte(key, 0) >= 0 {
			return bodyError(paraPath(i), "a key contains a NUL character")
		}
		switch string(key) {
		case "receiver":
			if err := d.id(&p.Receiver, i, "receiver"); err != nil {
				return err
			}
			continue
		case "room":
			if err := d.id(&p.Room, i, "room"); err != nil {
				return err
			}
			continue
		}
		// key is overwritten by the next read: resolve it first.
		name, ok := d.vars[string(key)]
		if !ok {
			k := string(key)
			if name, ok = render.ParseKey(k); !ok {
				return unknownParaKey(paraPath(i), k)
			}
			if !render.IsVarName(name) {
				if d.declared == nil {
					d.declared = render.Declared{}
				}
				d.declared[name] = struct{}{}
			}
			if d.vars == nil {
				d.vars = map[string]string{}
			}
			if len(d.vars) < maxInternedVars {
				d.vars[k] = name
			}
		}
		v, aerr := d.varValue(i, name)
		if aerr != nil {
			return aerr
		}
		if p.Vars == nil {
			p.Vars = make(map[string]string, d.nvars)
		}
		p.Vars[name] = v
	}
	if _, err := d.dec.ReadToken(); err != nil { // the closing brace
		return d.fail(err, paraPath(i), false)
	}
	d.nvars = len(p.Vars)
	return nil
}

// id reads the receiver or room of para i; null leaves *dst unset.
func (d *decoder) id(dst *string, i int, field string) *apiError {
	k, b, err := d.next()
	if err != nil {
		return d.fail(err, paraPath(i)+"."+field, false)
	}
	switch k {
	case 'n':
		return nil
	case '"':
		if bytes.IndexByte(b, 0) >= 0 {
			return bodyError(paraPath(i)+"."+field, "contains a NUL character")
		}
		*dst = string(b)
		return nil
	}
	return bodyError(paraPath(i)+"."+field, "must be a string, not %s", describe(k))
}

func unknownParaKey(path, key string) *apiError {
	if hint, ok := paraHints[key]; ok {
		return bodyError(path, "unknown key %q; did you mean %q?", key, hint)
	}
	if len(key) >= 3 && key[0] == '$' && key[len(key)-1] == '$' {
		name := key[1 : len(key)-1]
		if !strings.Contains(name, "$") {
			// The one reason render.ParseKey refuses such a key.
			return bodyError(path, "the template variable name in key %q is %d bytes long; a name is at most %d bytes",
				shorten(key), len(name), render.MaxNameLen)
		}
		return bodyError(path, "unknown key %q; a template variable's name cannot contain \"$\"", shorten(key))
	}
	name := strings.Trim(key, "$")
	if render.IsVarName(name) {
		return bodyError(path, "unknown key %q; template variables are written \"$%s$\"", key, name)
	}
	return bodyError(path, "unknown key %q; a recipient has \"receiver\", \"room\" and template variables such as \"$name$\" (any text without \"$\" between dollar signs)", key)
}

// shorten cuts a key of an error message to about 64 bytes (at a rune
// boundary), keeping its closing '$'.
func shorten(key string) string {
	const keep = 60
	if len(key) <= keep+4 {
		return key
	}
	cut := keep
	for cut > 0 && !utf8.RuneStart(key[cut]) {
		cut--
	}
	return key[:cut] + "…$"
}

// templates returns the message and extra compiled with the names the
// paras declare, compiling them on the first call. The dry-run preview,
// strict mode and the payload's declared names use it; the worker compiles
// the same way from the payload (chunkRun.compile), so both render alike.
func (req *sendRequest) templates() (*render.Template, *render.JSONTemplate) {
	if req.text != nil {
		return req.text, req.extra
	}
	req.text = render.CompileDeclared(req.Message, req.declared)
	if len(req.declared) > 0 && req.extra != nil {
		// Extra is the compact form of a value that compiled: it compiles.
		if extra, err := render.CompileJSONDeclared(req.Extra, req.declared); err == nil {
			req.extra = extra
		}
	}
	return req.text, req.extra
}

// usedDeclared returns the declared names (req.declared) that the message
// or extra use, sorted, or nil: what the payload carries so that every
// chunk compiles the templates as the whole batch does (a name declared
// only by paras of other chunks still makes a token). Without declared
// names it costs nothing.
func (req *sendRequest) usedDeclared() []string {
	if len(req.declared) == 0 {
		return nil
	}
	text, extra := req.templates()
	var used []string
	add := func(names []string) {
		for _, n := range names {
			if _, ok := req.declared[n]; ok {
				used = append(used, n)
			}
		}
	}
	add(text.Vars())
	if extra != nil {
		add(extra.Vars())
	}
	slices.Sort(used)
	return slices.Compact(used)
}

// varValue reads the value of variable name in para i: a string, number
// or boolean, rendered as its JSON text.
func (d *decoder) varValue(i int, name string) (string, *apiError) {
	k, b, err := d.next()
	if err != nil {
		return "", d.fail(err, paraPath(i)+".$"+name+"$", false)
	}
	switch k {
	case '"':
		if bytes.IndexByte(b, 0) >= 0 {
			return "", bodyError(paraPath(i)+".$"+name+"$", "contains a NUL character")
		}
		return string(b), nil
	case '0':
		return string(b), nil
	case 't':
		return "true", nil
	case 'f':
		return "false", nil
	}
	return "", bodyError(paraPath(i)+".$"+name+"$", "must be a string, number or boolean, not %s", describe(k))
}

// describe names a kind of JSON value for error messages.
func describe(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return k.String()
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func joinPath(path, sub string) string {
	switch {
	case sub == "":
		return path
	case sub[0] == '[':
		return path + sub
	}
	return path + "." + sub
}

// position converts a byte offset to a 1-based line and the number of
// runes before it on that line.
func position(body []byte, offset int64) (line, col int) {
	if offset > int64(len(body)) {
		offset = int64(len(body))
	}
	before := body[:offset]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:])
	return line, col
}

func invalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// newValidator returns the Service's validator: JSON field names in
// errors, and the "chatid" tag for user and room IDs.
func newValidator(maxIDLength int) *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			return f.Name
		}
		return name
	})
	_ = v.RegisterValidation("chatid", func(fl validator.FieldLevel) bool {
		return validID(fl.Field().String(), maxIDLength)
	})
	return v
}

// validID is the "chatid" rule for user and room IDs: at most maxLen
// bytes, no leading or trailing white space, no control characters.
func validID(s string, maxLen int) bool {
	return len(s) <= maxLen && strings.TrimSpace(s) == s && !strings.ContainsFunc(s, isControl)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// validate checks the decoded request and translates validator errors to
// API errors: MISSING_PARAMETER for what is absent or empty, INVALID_BODY
// for what is malformed. Validator types never leave this function.
//
// validator checks the top-level fields; each para is checked here in
// plain code, in one pass, with the details validator's dive gave: a para
// with neither receiver nor room (MISSING_PARAMETER, field "paras[i]"),
// then per para its receiver and its room if either breaks "chatid".
func (s *Service) validate(ctx context.Context, req *sendRequest) *apiError {
	var details []Detail
	missing := false
	if err := s.validator.Struct(req); err != nil {
		var verrs validator.ValidationErrors
		if !errors.As(err, &verrs) {
			s.log.ErrorContext(ctx, "batch: validating a request failed", "err", err)
			return errInternal
		}
		for _, fe := range verrs {
			field := fe.Namespace()
			if _, rest, ok := strings.Cut(field, "."); ok {
				field = rest
			}
			d := Detail{Field: field}
			switch fe.Tag() {
			case "required":
				missing = true
				d.Reason = "is required"
				if req.present[field] {
					d.Reason = "must not be empty"
				}
				if field == "paras" && req.present[field] {
					d.Reason = "must contain at least one recipient"
				}
			case "min":
				missing = true
				d.Reason = "must contain at least one recipient"
			case "max":
				d.Reason = fmt.Sprintf("must be at most %s bytes long", fe.Param())
			case "chatid":
				d.Reason = s.idReason()
			default:
				d.Reason = "is invalid (" + fe.Tag() + ")"
			}
			details = append(details, d)
		}
	}
	maxLen := s.cfg.MaxIDLength
	for i := range req.Paras {
		p := &req.Paras[i]
		if p.Receiver == "" && p.Room == "" {
			missing = true
			details = append(details, Detail{Index: index(i), Field: paraPath(i), Reason: `needs a "receiver" or a "room"`})
			continue
		}
		if p.Receiver != "" && !validID(p.Receiver, maxLen) {
			details = append(details, Detail{Index: index(i), Field: paraPath(i) + ".receiver", Reason: s.idReason()})
		}
		if p.Room != "" && !validID(p.Room, maxLen) {
			details = append(details, Detail{Index: index(i), Field: paraPath(i) + ".room", Reason: s.idReason()})
		}
	}
	if len(details) == 0 {
		return nil
	}
	code := CodeInvalidBody
	if missing {
		code = CodeMissingParameter
	}
	first := details[0]
	msg := first.Field + " " + first.Reason
	if len(details) > 1 {
		msg += fmt.Sprintf(" (and %d more problems; see details)", len(details)-1)
	}
	return newError(http.StatusBadRequest, code, "%s", msg).with(details...)
}

// idReason is the reason given for an ID that breaks the "chatid" rule.
func (s *Service) idReason() string {
	return fmt.Sprintf("must be at most %d bytes long, with no control characters and no leading or trailing spaces", s.cfg.MaxIDLength)
}

// recipients returns the paras as store recipients, para i as recipient i.
// The decoder builds them in place, so this is not a copy.
func (req *sendRequest) recipients() []store.Recipient { return req.Paras }
