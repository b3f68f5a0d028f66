package localsvctest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

func TestServices(t *testing.T) {
	ctx := context.Background()
	url := Database(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("postgres: %v %d", err, n)
	}
	conn.Close(ctx)

	r := Redis(t)
	opt, _ := redis.ParseURL(r.URL)
	rc := redis.NewClient(opt)
	defer rc.Close()
	if err := rc.Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := rc.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("redis: %v %q", err, v)
	}

	k := Kafka(t, "t")
	w := &kafka.Writer{Addr: kafka.TCP(k.Addr()), Topic: "t", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("a"), Value: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{k.Addr()}, Topic: "t", GroupID: "g", MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	msg, err := rd.ReadMessage(rctx)
	if err != nil || string(msg.Value) != "hello" {
		t.Fatalf("kafka: %v %q", err, msg.Value)
	}
}

func TestOwnPostgresCanBeKilled(t *testing.T) {
	pg := NewPostgres(t)
	ctx := context.Background()
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, pg.URL); err == nil {
		conn.Close(ctx)
		t.Fatal("killed postgres still accepts connections")
	}
}
