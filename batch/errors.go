package batch

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Error codes of the API. The HTTP status of an error response is its RC.
const (
	CodeInvalidAPIKey          = "INVALID_API_KEY"          // 401
	CodeUnauthorized           = "UNAUTHORIZED"             // 401: Config.AuthenticateRequest refused or found no credentials
	CodeInsufficientPermission = "INSUFFICIENT_PERMISSIONS" // 403
	CodeCrossOrigin            = "CROSS_ORIGIN_REQUEST"     // 403: a state-changing browser request from another origin
	CodeMissingParameter       = "MISSING_PARAMETER"        // 400
	CodeInvalidBody            = "INVALID_BODY"             // 400
	CodeInvalidParameter       = "INVALID_PARAMETER"        // 400
	CodeMissingVariable        = "MISSING_VARIABLE"         // 400
	CodeClientNotFound         = "CLIENT_NOT_FOUND"         // 404
	CodeRoomNotFound           = "ROOM_NOT_FOUND"           // 404
	CodeBatchNotFound          = "BATCH_NOT_FOUND"          // 404
	CodeNotFound               = "NOT_FOUND"                // 404
	CodeTaskNotFound           = "TASK_NOT_FOUND"           // 404: no such chunk task of the app in the queue
	CodeMethodNotAllowed       = "METHOD_NOT_ALLOWED"       // 405
	CodeIdempotencyInProgress  = "IDEMPOTENCY_IN_PROGRESS"  // 409
	CodeBatchFinished          = "BATCH_FINISHED"           // 409
	CodeBatchCanceled          = "BATCH_CANCELED"           // 409: pause or resume of a canceled or recalled batch
	CodeTaskNotRunnable        = "TASK_NOT_RUNNABLE"        // 409: the task is not archived or retrying
	CodeIdempotencyKeyReused   = "IDEMPOTENCY_KEY_REUSED"   // 422
	CodePayloadTooLarge        = "PAYLOAD_TOO_LARGE"        // 413
	CodeUnsupportedMediaType   = "UNSUPPORTED_MEDIA_TYPE"   // 415
	CodeRateLimitExceeded      = "RATE_LIMIT_EXCEEDED"      // 429
	CodeBacklogFull            = "BACKLOG_FULL"             // 429: the app's backlog is at Config.Admission's bound
	CodeInternal               = "INTERNAL_ERROR"           // 500
	CodeNotSupported           = "NOT_SUPPORTED"            // 501
	CodeUnavailable            = "UNAVAILABLE"              // 503
	CodeOverloaded             = "OVERLOADED"               // 503: the server's backlog is at Config.Admission's bound
)

// Detail is one entry of an error's details: which para, field or value
// the error is about.
type Detail struct {
	// Index is the para index, when the detail is about one para.
	Index *int `json:"index,omitempty"`
	// Field is the JSON path of the offending field, such as "paras[3].receiver".
	Field string `json:"field,omitempty"`
	// Value is the offending value, such as a receiver ID that does not exist.
	Value string `json:"value,omitempty"`
	// Reason says what is wrong, when the error's message does not.
	Reason string `json:"reason,omitempty"`
	// Variables lists template variables a recipient has no value for.
	Variables []string `json:"variables,omitempty"`
	// Receiver and Room name the recipient of the para a detail is about
	// (MISSING_VARIABLE), so that a sender can tell who is affected
	// without counting paras.
	Receiver string `json:"receiver,omitempty"`
	Room     string `json:"room,omitempty"`
}

func index(i int) *int { return &i }

// apiError is an error answered to the client.
type apiError struct {
	status  int
	code    string
	message string
	details []Detail
	// retryAfter, in seconds, is sent as Retry-After when positive.
	retryAfter int
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.message) }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func (e *apiError) with(d ...Detail) *apiError {
	e.details = append(e.details, d...)
	return e
}

var errUnavailable = &apiError{
	status: http.StatusServiceUnavailable, code: CodeUnavailable,
	message: "the service is temporarily unavailable; retry later", retryAfter: 5,
}

var errInternal = &apiError{
	status: http.StatusInternalServerError, code: CodeInternal,
	message: "an unexpected error occurred; it has been logged",
}

// envelope is the body of every response: {"RC":0,"RM":"OK","result":…}
// on success, {"RC":<status>,"RM":<status text>,"error":{…}} on failure.
type envelope struct {
	RC     int        `json:"RC"`
	RM     string     `json:"RM"`
	Result any        `json:"result,omitempty"`
	Error  *errorBody `json:"error,omitempty"`
}

type errorBody struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Details []Detail `json:"details"`
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil { // only our own types are encoded; this is a bug
		status, b = http.StatusInternalServerError, []byte(`{"RC":500,"RM":"Internal Server Error","error":{"code":"INTERNAL_ERROR","message":"response encoding failed","details":[]}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeOK(w http.ResponseWriter, result any) {
	writeJSON(w, http.StatusOK, envelope{RC: 0, RM: "OK", Result: result})
}

func writeError(w http.ResponseWriter, e *apiError) {
	details := e.details
	if details == nil {
		details = []Detail{}
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	writeJSON(w, e.status, envelope{
		RC: e.status, RM: http.StatusText(e.status),
		Error: &errorBody{Code: e.code, Message: e.message, Details: details},
	})
}
