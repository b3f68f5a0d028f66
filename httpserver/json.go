package httpserver

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

var contentTypeJSON = []byte("application/json")

// WriteJSON answers status with v encoded as JSON.
func WriteJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		Error(ctx, fasthttp.StatusInternalServerError, "cannot encode response: "+err.Error())
		return
	}
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(append(body, '\n'))
}

// Error answers status with {"error": msg} followed by fields, which are
// key and value pairs (keys are strings; values are encoded as JSON).
func Error(ctx *fasthttp.RequestCtx, status int, msg string, fields ...any) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(AppendError(nil, msg, fields...))
}

// AppendError appends the JSON error body for msg and fields to dst.
func AppendError(dst []byte, msg string, fields ...any) []byte {
	dst = append(dst, `{"error":`...)
	dst = AppendString(dst, msg)
	for i := 0; i+1 < len(fields); i += 2 {
		key, _ := fields[i].(string)
		dst = append(dst, ',')
		dst = AppendString(dst, key)
		dst = append(dst, ':')
		switch v := fields[i+1].(type) {
		case string:
			dst = AppendString(dst, v)
		case []byte:
			dst = AppendString(dst, string(v))
		default:
			b, err := json.Marshal(v)
			if err != nil {
				b = []byte("null")
			}
			dst = append(dst, b...)
		}
	}
	return append(dst, "}\n"...)
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
