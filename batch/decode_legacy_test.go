package batch

// This file keeps the request decoder and validator as they were before
// decodeSend moved to jsontext (encoding/json's Decoder.Token and
// validator's dive over every para), unchanged except for names. It is the
// oracle of TestDecodeMatchesLegacy and FuzzDecodeSend: the new decoder must
// accept exactly what this one accepted and answer the same errors.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-playground/validator/v10"

	"github.com/chatbatch/chatbatch/render"
)

// legacySendRequest is a decoded POST /messages/batch body.
type legacySendRequest struct {
	Message        string          `json:"message" validate:"required"`
	MessageType    string          `json:"messageType" validate:"required,max=64"`
	Sender         string          `json:"sender" validate:"omitempty,chatid"`
	Push           bool            `json:"push"`
	SkipTotalBadge bool            `json:"skipTotalBadge"`
	Extra          json.RawMessage `json:"extra"`
	Paras          []legacyPara    `json:"paras" validate:"required,min=1,dive"`
	// SendAt is when to send; zero means now.
	SendAt time.Time `json:"sendAt"`
	// StrictVariables asks for strict variable checking for this request.
	StrictVariables bool `json:"strictVariables"`

	// fields holds allow-listed extra fields, compacted.
	fields map[string]json.RawMessage
	// extra is the compiled Extra, nil when there is none.
	extra *render.JSONTemplate
	// present records which top-level keys the body had (null counts as absent).
	present map[string]bool
}

// legacyPara is one recipient of the request.
type legacyPara struct {
	Receiver string `json:"receiver" validate:"required_without=Room,omitempty,chatid"`
	Room     string `json:"room" validate:"required_without=Receiver,omitempty,chatid"`
	Vars     map[string]string
}

// legacyFieldHints suggest the right name for likely mistakes.
var legacyFieldHints = map[string]string{
	"type": "messageType", "msgType": "messageType", "message_type": "messageType",
	"text": "message", "msg": "message", "body": "message", "content": "message",
	"receivers": "paras", "recipients": "paras", "to": "paras", "params": "paras",
	"from": "sender", "skip_total_badge": "skipTotalBadge",
	"send_at": "sendAt", "scheduleAt": "sendAt", "scheduledAt": "sendAt", "strict": "strictVariables",
}

var legacyParaHints = map[string]string{
	"user": "receiver", "userId": "receiver", "userID": "receiver", "to": "receiver", "receiverId": "receiver",
	"roomId": "room", "roomID": "room", "room_id": "room",
}

// legacyBodyError is an INVALID_BODY error about one place in the body.
func legacyBodyError(field, format string, args ...any) *apiError {
	reason := fmt.Sprintf(format, args...)
	msg := reason
	if field != "" {
		msg = field + ": " + reason
	}
	return newError(http.StatusBadRequest, CodeInvalidBody, "%s", msg).with(Detail{Field: field, Reason: reason})
}

// legacyDecodeSend parses body strictly: one JSON object, valid UTF-8, no NUL,
// no duplicate keys, no unknown fields, no trailing data, every value of
// the documented type. It stops at the first problem.
func legacyDecodeSend(body []byte, maxRecipients int, extraFields map[string]bool) (*legacySendRequest, *apiError) {
	if i := bytes.IndexByte(body, 0); i >= 0 {
		return nil, legacyBodyError("", "the body contains a NUL byte at offset %d", i)
	}
	if !utf8.Valid(body) {
		return nil, legacyBodyError("", "the body is not valid UTF-8 (first bad byte at offset %d)", legacyInvalidUTF8Offset(body))
	}
	d := &legacyDecoder{dec: json.NewDecoder(bytes.NewReader(body)), body: body}
	d.dec.UseNumber()
	req := &legacySendRequest{present: map[string]bool{}}
	if err := d.object("", func(key string) *apiError { return d.topField(req, key, maxRecipients, extraFields) }); err != nil {
		return nil, err
	}
	if _, err := d.dec.Token(); err != io.EOF {
		return nil, legacyBodyError("", "unexpected data after the JSON object at offset %d", d.dec.InputOffset())
	}
	return req, nil
}

type legacyDecoder struct {
	dec  *json.Decoder
	body []byte
}

// syntax turns a decoding error into an INVALID_BODY naming the position.
func (d *legacyDecoder) syntax(err error) *apiError {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		// The streaming decoder's offsets are approximate; a full parse
		// (only on this error path) points at the offending byte.
		var full *json.SyntaxError
		if errors.As(json.Unmarshal(d.body, new(any)), &full) {
			se = full
		}
		line, col := legacyPosition(d.body, max(se.Offset-1, 0))
		return legacyBodyError("", "invalid JSON at line %d, column %d: %s", line, col+1, se.Error())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return legacyBodyError("", "invalid JSON: the body ends before the JSON value does")
	}
	return legacyBodyError("", "invalid JSON: %v", err)
}

func (d *legacyDecoder) token() (json.Token, *apiError) {
	tok, err := d.dec.Token()
	if err != nil {
		return nil, d.syntax(err)
	}
	return tok, nil
}

// object reads a JSON object, calling field for each key with the decoder
// positioned before the value. Duplicate keys are an error.
func (d *legacyDecoder) object(path string, field func(key string) *apiError) *apiError {
	tok, err := d.token()
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		if path == "" {
			return legacyBodyError("", "the body must be a JSON object, not %s", legacyDescribe(tok))
		}
		return legacyBodyError(path, "must be an object, not %s", legacyDescribe(tok))
	}
	seen := map[string]bool{}
	for d.dec.More() {
		tok, err := d.token()
		if err != nil {
			return err
		}
		key := tok.(string) // the decoder guarantees object keys are strings
		if seen[key] {
			return legacyBodyError(legacyJoin(path, key), "duplicate key %q", key)
		}
		seen[key] = true
		if strings.IndexByte(key, 0) >= 0 {
			return legacyBodyError(path, "a key contains a NUL character")
		}
		if err := field(key); err != nil {
			return err
		}
	}
	_, err = d.token() // the closing brace
	return err
}

func (d *legacyDecoder) topField(req *legacySendRequest, key string, maxRecipients int, extraFields map[string]bool) *apiError {
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
		raw, tmpl, err := d.rawJSON(key)
		if err != nil || raw == nil {
			return err
		}
		if raw[0] != '{' {
			return legacyBodyError(key, "must be a JSON object, not %s", legacyDescribeRaw(raw))
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
	}
	if extraFields[key] {
		raw, tmpl, err := d.rawJSON(key)
		if err != nil || raw == nil {
			return err
		}
		if req.fields == nil {
			req.fields = map[string]json.RawMessage{}
		}
		req.fields[key] = tmpl.Compact()
		return nil
	}
	if hint, ok := legacyFieldHints[key]; ok {
		return legacyBodyError(key, "unknown field %q; did you mean %q?", key, hint)
	}
	if _, ok := render.ParseVarKey(key); ok {
		return legacyBodyError(key, "unknown field %q; template variables go in each element of paras", key)
	}
	return legacyBodyError(key, "unknown field %q", key)
}

// str reads a string value; null leaves *dst unset.
func (d *legacyDecoder) str(path string, dst *string, present map[string]bool) *apiError {
	tok, err := d.token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case nil:
		return nil
	case string:
		if strings.IndexByte(v, 0) >= 0 {
			return legacyBodyError(path, "contains a NUL character")
		}
		*dst = v
		if present != nil {
			present[path] = true
		}
		return nil
	}
	return legacyBodyError(path, "must be a string, not %s", legacyDescribe(tok))
}

func (d *legacyDecoder) boolean(path string, dst *bool, present map[string]bool) *apiError {
	tok, err := d.token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case nil:
		return nil
	case bool:
		*dst = v
		present[path] = true
		return nil
	}
	return legacyBodyError(path, "must be true or false, not %s", legacyDescribe(tok))
}

// time reads an RFC 3339 string or a number of Unix milliseconds; null
// leaves *dst zero.
func (d *legacyDecoder) time(path string, dst *time.Time, present map[string]bool) *apiError {
	tok, err := d.token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case nil:
		return nil
	case string:
		t, perr := time.Parse(time.RFC3339Nano, v)
		if perr != nil {
			return legacyBodyError(path, "%q is not an RFC 3339 time such as \"2026-04-10T14:00:00+08:00\"", v)
		}
		*dst = t.UTC()
	case json.Number:
		ms, perr := strconv.ParseInt(v.String(), 10, 64)
		if perr != nil || ms < 0 || ms > legacyMaxUnixMillis {
			return legacyBodyError(path, "%s is not a time in Unix milliseconds", v)
		}
		*dst = time.UnixMilli(ms).UTC()
	default:
		return legacyBodyError(path, "must be an RFC 3339 string or Unix milliseconds, not %s", legacyDescribe(tok))
	}
	present[path] = true
	return nil
}

// legacyMaxUnixMillis is 9999-12-31T23:59:59.999Z.
const legacyMaxUnixMillis = 253402300799999

// rawJSON reads any JSON value and compiles it strictly (duplicate keys
// and NUL characters at any depth are errors). null returns nil, nil.
func (d *legacyDecoder) rawJSON(path string) (json.RawMessage, *render.JSONTemplate, *apiError) {
	var raw json.RawMessage
	if err := d.dec.Decode(&raw); err != nil {
		return nil, nil, d.syntax(err)
	}
	if string(raw) == "null" {
		return nil, nil, nil
	}
	tmpl, err := render.CompileJSON(raw)
	if err != nil {
		var je *render.JSONError
		if errors.As(err, &je) {
			return nil, nil, legacyBodyError(legacyJoinPath(path, je.Path), "%s", je.Reason)
		}
		return nil, nil, legacyBodyError(path, "%v", err)
	}
	return raw, tmpl, nil
}

func (d *legacyDecoder) paras(req *legacySendRequest, maxRecipients int) *apiError {
	tok, err := d.token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if tok != json.Delim('[') {
		return legacyBodyError("paras", "must be an array of recipient objects, not %s", legacyDescribe(tok))
	}
	req.present["paras"] = true
	req.Paras = []legacyPara{}
	for d.dec.More() {
		i := len(req.Paras)
		if i == maxRecipients {
			return newError(http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
				"paras has more than %d recipients, the most one request may carry; split it into several requests", maxRecipients)
		}
		path := fmt.Sprintf("paras[%d]", i)
		var p legacyPara
		err := d.object(path, func(key string) *apiError {
			switch key {
			case "receiver":
				return d.str(path+".receiver", &p.Receiver, nil)
			case "room":
				return d.str(path+".room", &p.Room, nil)
			}
			name, ok := render.ParseVarKey(key)
			if !ok {
				return legacyUnknownParaKey(path, key)
			}
			v, err := d.varValue(path + "." + key)
			if err != nil {
				return err
			}
			if p.Vars == nil {
				p.Vars = map[string]string{}
			}
			p.Vars[name] = v
			return nil
		})
		if err != nil {
			return err
		}
		req.Paras = append(req.Paras, p)
	}
	_, err = d.token() // the closing bracket
	return err
}

func legacyUnknownParaKey(path, key string) *apiError {
	if hint, ok := legacyParaHints[key]; ok {
		return legacyBodyError(path, "unknown key %q; did you mean %q?", key, hint)
	}
	name := strings.Trim(key, "$")
	if render.IsVarName(name) {
		return legacyBodyError(path, "unknown key %q; template variables are written \"$%s$\"", key, name)
	}
	return legacyBodyError(path, "unknown key %q; a recipient has \"receiver\", \"room\" and template variables such as \"$name$\" (letters, digits, _, - and . between dollar signs)", key)
}

// varValue reads a template variable's value: a string, number or
// boolean, rendered as its JSON text.
func (d *legacyDecoder) varValue(path string) (string, *apiError) {
	tok, err := d.token()
	if err != nil {
		return "", err
	}
	switch v := tok.(type) {
	case string:
		if strings.IndexByte(v, 0) >= 0 {
			return "", legacyBodyError(path, "contains a NUL character")
		}
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		if v {
			return "true", nil
		}
		return "false", nil
	}
	return "", legacyBodyError(path, "must be a string, number or boolean, not %s", legacyDescribe(tok))
}

func legacyDescribe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	}
	return fmt.Sprintf("%T", tok)
}

func legacyDescribeRaw(raw json.RawMessage) string {
	switch raw[0] {
	case '"':
		return "a string"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

func legacyJoin(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func legacyJoinPath(path, sub string) string {
	switch {
	case sub == "":
		return path
	case sub[0] == '[':
		return path + sub
	}
	return path + "." + sub
}

// legacyPosition converts a byte offset to a 1-based line and the number of
// runes before it on that line.
func legacyPosition(body []byte, offset int64) (line, col int) {
	if offset > int64(len(body)) {
		offset = int64(len(body))
	}
	before := body[:offset]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:])
	return line, col
}

func legacyInvalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// legacyNewValidator returns the Service's validator: JSON field names in
// errors, and the "chatid" tag for user and room IDs.
func legacyNewValidator(maxIDLength int) *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			return f.Name
		}
		return name
	})
	_ = v.RegisterValidation("chatid", func(fl validator.FieldLevel) bool {
		s := fl.Field().String()
		return len(s) <= maxIDLength && strings.TrimSpace(s) == s && !strings.ContainsFunc(s, legacyIsControl)
	})
	return v
}

func legacyIsControl(r rune) bool { return r < 0x20 || r == 0x7f }

// validate checks the decoded request and translates validator errors to
// API errors: MISSING_PARAMETER for what is absent or empty, INVALID_BODY
// for what is malformed. Validator types never leave this function.
func legacyValidate(s *Service, v *validator.Validate, req *legacySendRequest) *apiError {
	err := v.Struct(req)
	if err == nil {
		return nil
	}
	var verrs validator.ValidationErrors
	if !errors.As(err, &verrs) {
		s.log.Error("batch: validating a request failed", "err", err)
		return errInternal
	}
	missing := false
	var details []Detail
	seenPara := map[string]bool{}
	for _, fe := range verrs {
		field := fe.Namespace()
		if _, rest, ok := strings.Cut(field, "."); ok {
			field = rest
		}
		d := Detail{Field: field}
		if i := legacyParaIndex(field); i >= 0 {
			d.Index = index(i)
		}
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
		case "required_without":
			missing = true
			paraPath, _, _ := strings.Cut(field, ".")
			if seenPara[paraPath] {
				continue
			}
			seenPara[paraPath] = true
			d.Field, d.Reason = paraPath, `needs a "receiver" or a "room"`
		case "max":
			d.Reason = fmt.Sprintf("must be at most %s bytes long", fe.Param())
		case "chatid":
			d.Reason = fmt.Sprintf("must be at most %d bytes long, with no control characters and no leading or trailing spaces", s.cfg.MaxIDLength)
		default:
			d.Reason = "is invalid (" + fe.Tag() + ")"
		}
		details = append(details, d)
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

// legacyParaIndex returns i for a field path "paras[i]…", or -1.
func legacyParaIndex(field string) int {
	var i int
	if _, err := fmt.Sscanf(field, "paras[%d]", &i); err != nil {
		return -1
	}
	return i
}
