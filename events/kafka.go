package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// ParseBrokers splits a comma-separated list of host:port broker addresses.
func ParseBrokers(s string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(s, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if !strings.Contains(b, ":") {
			return nil, fmt.Errorf("events: broker %q is not host:port", b)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, errors.New("events: no Kafka broker given")
	}
	return out, nil
}

// CheckBrokers returns a one-line error when none of the brokers answers.
func CheckBrokers(ctx context.Context, brokers []string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var errs []string
	for _, b := range brokers {
		conn, err := kafka.DialContext(ctx, "tcp", b)
		if err == nil {
			_, err = conn.Brokers()
			conn.Close()
			if err == nil {
				return nil
			}
		}
		errs = append(errs, fmt.Sprintf("%s: %v", b, err))
	}
	return fmt.Errorf("cannot reach a Kafka broker (%s)", strings.Join(errs, "; "))
}

// Publisher publishes messages with the broker's full acknowledgement.
type Publisher struct {
	w *kafka.Writer
}

// NewPublisher returns a Publisher to brokers. It connects lazily.
func NewPublisher(brokers []string) *Publisher {
	return &Publisher{w: &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Balancer:               &kafka.Hash{},
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           5 * time.Millisecond,
		WriteTimeout:           10 * time.Second,
		ReadTimeout:            10 * time.Second,
		MaxAttempts:            1, // the outbox relay retries with its own backoff
		AllowAutoTopicCreation: true,
	}}
}

// Publish sends one message and returns once all in-sync replicas have it.
func (p *Publisher) Publish(ctx context.Context, topic, key string, value []byte) error {
	return p.w.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte(key), Value: value})
}

// Close flushes and closes the publisher.
func (p *Publisher) Close() error { return p.w.Close() }
