package ingestclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"

	"github.com/promotion-service/promo/ingest"
)

// ErrUnreachable is wrapped by the errors of a Client that could not
// connect to the server at all.
var ErrUnreachable = errors.New("ingestclient: server unreachable")

// ServerError is an answer of the server that is not a success: the HTTP
// status and the server's JSON error.
type ServerError struct {
	// Method and URL are those of the request.
	Method, URL string
	// StatusCode is the HTTP status, e.g. 401 or 409.
	StatusCode int
	// Message is the server's "error" field, or a description of the
	// answer when it was not JSON.
	Message string
	// Fields are the other fields of the server's JSON error, such as the
	// import_id of the import that is already running with a 409.
	Fields map[string]json.RawMessage
}

// Error returns the status, the message and the context fields on one line.
func (e *ServerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server answered %d %s to %s %s", e.StatusCode, http.StatusText(e.StatusCode), e.Method, e.URL)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if len(e.Fields) > 0 {
		keys := make([]string, 0, len(e.Fields))
		for k := range e.Fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString(" (")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s=%s", k, e.Fields[k])
		}
		b.WriteString(")")
	}
	return b.String()
}

// ImportError reports an import that the server accepted and that failed,
// or whose version the activation guard held (Status.State
// ingest.StateHeld: committed, not serving).
type ImportError struct {
	// Status is the final status of the import, with its row errors.
	Status ingest.Status
}

// Error returns the server's reason for the failure.
func (e *ImportError) Error() string {
	msg := e.Status.Error
	if msg == "" {
		msg = "no reason given"
	}
	if e.Status.State == ingest.StateHeld {
		return fmt.Sprintf("import %d held, version %d not activated: %s", e.Status.ImportID, e.Status.DatasetVersion, msg)
	}
	return fmt.Sprintf("import %d failed: %s", e.Status.ImportID, msg)
}

// unreachableError is a failure to connect to the server.
type unreachableError struct {
	server string
	err    error
}

func (e *unreachableError) Error() string {
	reason := e.err.Error()
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.Is(e.err, syscall.ECONNREFUSED):
		reason = "connection refused (is the server running, and on this port?)"
	case errors.As(e.err, &dnsErr):
		reason = "cannot resolve host " + dnsErr.Name + ": " + dnsErr.Err
	case errors.As(e.err, &opErr) && opErr.Timeout():
		reason = "connection timed out"
	case errors.As(e.err, &opErr) && opErr.Err != nil:
		reason = opErr.Err.Error()
	}
	return fmt.Sprintf("cannot connect to the promo server at %s: %s", e.server, reason)
}

func (e *unreachableError) Unwrap() []error { return []error{ErrUnreachable, e.err} }

func newServerError(req *http.Request, code int, body []byte) *ServerError {
	e := &ServerError{Method: req.Method, URL: req.URL.Redacted(), StatusCode: code}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) == nil {
		if raw, ok := fields["error"]; ok {
			if json.Unmarshal(raw, &e.Message) != nil {
				e.Message = string(raw)
			}
			delete(fields, "error")
			if len(fields) > 0 {
				e.Fields = fields
			}
			return e
		}
	}
	// Not one of ours: a proxy's page, say. Its start is enough.
	msg := string(bytes.TrimSpace(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	e.Message = strings.Join(strings.Fields(msg), " ")
	return e
}
