package localsvc

import (
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an in-process Kafka-protocol broker (kfake). Its data lives in
// memory: a restarted broker is empty, which is what tests of redelivery
// want.
type Kafka struct {
	c      *kfake.Cluster
	port   int
	topics []string
}

// StartKafka starts a single broker on port (0 picks a free one) with
// topics created, one partition each.
func StartKafka(port int, topics ...string) (*Kafka, error) {
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	k := &Kafka{port: port, topics: topics}
	if err := k.start(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Kafka) start() error {
	var err error
	// The port of a broker just stopped may linger a moment.
	for i := 0; i < 50; i++ {
		k.c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(k.port), kfake.SeedTopics(1, k.topics...),
			kfake.AllowAutoTopicCreation())
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("cannot start the Kafka-protocol broker on port %d: %w", k.port, err)
}

// Addr returns the broker's address, host:port.
func (k *Kafka) Addr() string { return net.JoinHostPort("127.0.0.1", fmt.Sprint(k.port)) }

// Stop stops the broker; its messages are lost.
func (k *Kafka) Stop() {
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// Restart starts an empty broker on the same port after Stop.
func (k *Kafka) Restart() error {
	k.Stop()
	return k.start()
}
