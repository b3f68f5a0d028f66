package ingestclient

import (
	"context"
	"errors"
	"strconv"

	"github.com/promotion-service/promo/ingest"
)

// Status returns the status of import id, from GET /imports/{id}.
func (c *Client) Status(ctx context.Context, id int64) (ingest.Status, error) {
	var st ingest.Status
	err := c.get(ctx, c.base.JoinPath("imports", strconv.FormatInt(id, 10)), &st)
	return st, err
}

// Imports returns the imports the server remembers, newest first, from
// GET /imports.
func (c *Client) Imports(ctx context.Context) ([]ingest.Status, error) {
	var out struct {
		Imports []ingest.Status `json:"imports"`
	}
	err := c.get(ctx, c.base.JoinPath("imports"), &out)
	return out.Imports, err
}

// newestImport returns the id of the newest import the server remembers,
// and whether it could tell: a server without GET /imports does not stop
// an upload, it only hides the job until the upload is done.
func (c *Client) newestImport(ctx context.Context) (int64, bool, error) {
	list, err := c.Imports(ctx)
	var se *ServerError
	switch {
	case errors.As(err, &se):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	var id int64
	for _, st := range list {
		id = max(id, st.ImportID)
	}
	return id, true, nil
}
