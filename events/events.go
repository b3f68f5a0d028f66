// Package events defines the messages of topic promotions.datasets, which
// announce committed dataset versions to read nodes.
//
// Delivery is at least once: the ingest service publishes from an outbox
// and marks a row sent only after the broker acknowledged it, so a crash
// between the two publishes the same event again. Consumers must treat a
// version they already know (prepared or served) as a no-op, and must not
// assume events arrive in version order.
package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// Topic is the Kafka topic of dataset events.
const Topic = "promotions.datasets"

// DatasetCommitted announces that a version is durable in PostgreSQL and
// can be pulled. It is the JSON value of a message whose key is Dataset.
type DatasetCommitted struct {
	// Type is always "dataset.committed".
	Type string `json:"type"`
	// Dataset names the dataset ("promotions").
	Dataset string `json:"dataset"`
	// Version is the committed version.
	Version uint64 `json:"version"`
	// Rows is the number of distinct promotions in it.
	Rows int64 `json:"rows"`
	// Slots is the number of ring slots the rows are laid out by, and
	// Partitions the number of tables they are split into (each holds a
	// contiguous range of Slots/Partitions slots).
	Slots      int `json:"slots"`
	Partitions int `json:"partitions"`
	// Checksum is the wrapping sum of promotion.Record.Checksum over all
	// rows, in hex; per-slot sums are in table dataset_slots.
	Checksum    string    `json:"checksum"`
	CreatedAt   time.Time `json:"created_at"`
	CommittedAt time.Time `json:"committed_at"`
	// Held is set when the activation guard held the version: read nodes
	// may prepare it, but the cluster serves it only once an operator
	// activates it.
	Held bool `json:"held,omitempty"`
}

// TypeCommitted is the Type of DatasetCommitted.
const TypeCommitted = "dataset.committed"

// Decode parses a message value.
func Decode(b []byte) (DatasetCommitted, error) {
	var e DatasetCommitted
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("events: malformed message: %w", err)
	}
	if e.Type != TypeCommitted || e.Version == 0 || e.Slots <= 0 || e.Partitions <= 0 {
		return e, fmt.Errorf("events: not a dataset.committed event: %s", b)
	}
	return e, nil
}
