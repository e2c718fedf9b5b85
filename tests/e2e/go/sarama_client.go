// A small sarama (Debian's 1.22, built in GOPATH mode) client for tests/e2e/test_old_clients.py.
//
//	sarama_client produce -brokers B -topic T -prefix P -n N [-version 0.8.2.0]
//	    sends P-0 .. P-(N-1) with a SyncProducer, prints "produced N"
//	sarama_client consume -brokers B -topic T -group G -n N -timeout S
//	    consumes in group G until N messages arrived (each value printed on a line), marks
//	    them, then closes the group (committing offsets with OffsetCommit v1) and exits;
//	    exits 2 when fewer than N arrived within S seconds
//
// The client speaks Kafka 0.10.2's versions by default (Produce v2 and Fetch v3 with magic 1 message
// sets, OffsetCommit v1, JoinGroup v1); `-version 0.8.2.0`, sarama's own default, produces
// with Produce v0 and magic 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

type handler struct {
	mu     sync.Mutex
	want   int
	got    []string
	done   chan struct{}
	closed bool
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for msg := range c.Messages() {
		h.mu.Lock()
		if len(h.got) < h.want {
			h.got = append(h.got, string(msg.Value))
			s.MarkMessage(msg, "")
		}
		if len(h.got) >= h.want && !h.closed {
			h.closed = true
			close(h.done)
		}
		h.mu.Unlock()
	}
	return nil
}

func config(version string) *sarama.Config {
	c := sarama.NewConfig()
	v, err := sarama.ParseKafkaVersion(version)
	if err != nil {
		fmt.Fprintln(os.Stderr, "version:", err)
		os.Exit(64)
	}
	c.Version = v
	c.ClientID = "sarama-e2e"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	c.Consumer.Return.Errors = true
	return c
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sarama_client produce|consume [flags]")
		os.Exit(64)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "bootstrap brokers, comma separated")
	topic := fs.String("topic", "", "topic")
	prefix := fs.String("prefix", "m", "value prefix (produce)")
	group := fs.String("group", "", "consumer group (consume)")
	n := fs.Int("n", 1, "messages")
	timeout := fs.Int("timeout", 30, "seconds (consume)")
	version := fs.String("version", "0.10.2.0", "the Kafka version sarama speaks (0.8.2.0: Produce v0)")
	fs.Parse(os.Args[2:])
	addrs := strings.Split(*brokers, ",")
	switch os.Args[1] {
	case "produce":
		p, err := sarama.NewSyncProducer(addrs, config(*version))
		if err != nil {
			fmt.Fprintln(os.Stderr, "producer:", err)
			os.Exit(1)
		}
		for i := 0; i < *n; i++ {
			msg := &sarama.ProducerMessage{
				Topic: *topic,
				Key:   sarama.StringEncoder(fmt.Sprintf("k%d", i)),
				Value: sarama.StringEncoder(fmt.Sprintf("%s-%d", *prefix, i)),
			}
			if _, _, err := p.SendMessage(msg); err != nil {
				fmt.Fprintln(os.Stderr, "send:", err)
				os.Exit(1)
			}
		}
		if err := p.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close:", err)
			os.Exit(1)
		}
		fmt.Printf("produced %d\n", *n)
	case "consume":
		g, err := sarama.NewConsumerGroup(addrs, *group, config(*version))
		if err != nil {
			fmt.Fprintln(os.Stderr, "group:", err)
			os.Exit(1)
		}
		go func() {
			for err := range g.Errors() {
				fmt.Fprintln(os.Stderr, "group error:", err)
			}
		}()
		h := &handler{want: *n, done: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for ctx.Err() == nil {
				if err := g.Consume(ctx, []string{*topic}, h); err != nil {
					fmt.Fprintln(os.Stderr, "consume:", err)
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
		code := 0
		select {
		case <-h.done:
		case <-time.After(time.Duration(*timeout) * time.Second):
			code = 2
		}
		cancel()
		if err := g.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close:", err)
			code = 1
		}
		h.mu.Lock()
		for _, v := range h.got {
			fmt.Println(v)
		}
		h.mu.Unlock()
		os.Exit(code)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(64)
	}
}
