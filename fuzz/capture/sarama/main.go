// Command sarama drives the sarama Kafka client (Debian's golang-github-shopify-sarama-dev)
// through one broker, so that fuzz/capture/capture.py can record the requests it sends: cluster
// admin calls, a producer per compression codec, a partition consumer, a consumer group that
// commits, and the group admin calls. Every step is bounded in time; a failing step is reported
// on stderr and the next one runs (a broker may refuse what it does not implement).
//
// Built in GOPATH mode against the Debian package:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o sarama-driver ./fuzz/capture/sarama
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/Shopify/sarama"
)

// stepTimeout bounds each step, so that a request the broker never answers cannot hang the run.
const stepTimeout = 20 * time.Second

// recordsPerBatch is how many small records each producer sends in one call (one batch).
const recordsPerBatch = 8

func step(name string, f func() error) {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "sarama: %s: %v\n", name, err)
		} else {
			fmt.Fprintf(os.Stderr, "sarama: %s: ok\n", name)
		}
	case <-time.After(stepTimeout):
		fmt.Fprintf(os.Stderr, "sarama: %s: timed out after %s\n", name, stepTimeout)
	}
}

func config(version sarama.KafkaVersion) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = version
	c.ClientID = "sarama-capture"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Flush.Messages = recordsPerBatch
	c.Producer.Flush.Frequency = 50 * time.Millisecond
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
	c.Metadata.Retry.Max = 2
	c.Metadata.Retry.Backoff = 100 * time.Millisecond
	c.Net.DialTimeout = 5 * time.Second
	c.Net.ReadTimeout = 10 * time.Second
	return c
}

// groupHandler marks every message it sees and ends the session after `want` messages.
type groupHandler struct {
	want int
	seen int
	done chan struct{}
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		s.MarkMessage(m, "")
		h.seen++
		if h.seen == h.want {
			close(h.done)
			return nil
		}
	}
	return nil
}

func produce(brokers []string, version sarama.KafkaVersion, topic string, codec sarama.CompressionCodec) error {
	c := config(version)
	c.Producer.Compression = codec
	p, err := sarama.NewSyncProducer(brokers, c)
	if err != nil {
		return err
	}
	defer p.Close()
	var msgs []*sarama.ProducerMessage
	for i := 0; i < recordsPerBatch; i++ {
		m := &sarama.ProducerMessage{
			Topic: topic,
			Key:   sarama.StringEncoder(fmt.Sprintf("key-%d", i)),
			// Repetitive values, so that every codec really compresses.
			Value: sarama.StringEncoder(strings.Repeat(fmt.Sprintf("sarama %s %d ", codec, i), 6)),
		}
		if version.IsAtLeast(sarama.V0_11_0_0) {
			m.Headers = []sarama.RecordHeader{{Key: []byte("h"), Value: []byte(fmt.Sprint(i))}}
		}
		msgs = append(msgs, m)
	}
	return p.SendMessages(msgs)
}

func main() {
	bootstrap := flag.String("brokers", "127.0.0.1:9092", "bootstrap address")
	versionName := flag.String("version", "2.1.0", "Kafka version sarama speaks")
	prefix := flag.String("prefix", "sarama", "prefix of every topic and group name")
	flag.Parse()
	version, err := sarama.ParseKafkaVersion(*versionName)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	brokers := []string{*bootstrap}
	topic := *prefix + "-data"
	group := *prefix + "-group"

	// A fresh admin (and connection) per call: Strom closes the connection on a request
	// version it does not serve, and sarama's admin does not reconnect.
	admin := func(name string, f func(sarama.ClusterAdmin) error) {
		step(name, func() error {
			a, err := sarama.NewClusterAdmin(brokers, config(version))
			if err != nil {
				return err
			}
			defer a.Close()
			return f(a)
		})
	}
	admin("create topic", func(a sarama.ClusterAdmin) error {
		return a.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1,
			ConfigEntries: map[string]*string{}}, false)
	})
	admin("create topic (validate only)", func(a sarama.ClusterAdmin) error {
		return a.CreateTopic(*prefix+"-validate", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, true)
	})
	admin("list topics", func(a sarama.ClusterAdmin) error { _, err := a.ListTopics(); return err })
	admin("describe topics", func(a sarama.ClusterAdmin) error { _, err := a.DescribeTopics([]string{topic}); return err })
	admin("describe cluster", func(a sarama.ClusterAdmin) error { _, _, err := a.DescribeCluster(); return err })
	admin("describe config", func(a sarama.ClusterAdmin) error {
		_, err := a.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
		return err
	})
	admin("create partitions", func(a sarama.ClusterAdmin) error { return a.CreatePartitions(topic, 3, nil, false) })

	codecs := []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP,
		sarama.CompressionSnappy, sarama.CompressionLZ4}
	if version.IsAtLeast(sarama.V2_1_0_0) {
		codecs = append(codecs, sarama.CompressionZSTD)
	}
	for _, codec := range codecs {
		codec := codec
		step("produce "+codec.String(), func() error { return produce(brokers, version, topic, codec) })
	}

	step("partition consumer", func() error {
		consumer, err := sarama.NewConsumer(brokers, config(version))
		if err != nil {
			return err
		}
		defer consumer.Close()
		pc, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
		if err != nil {
			return err
		}
		defer pc.Close()
		select {
		case <-pc.Messages():
			return nil
		case err := <-pc.Errors():
			return err
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no message")
		}
	})

	step("offsets", func() error {
		client, err := sarama.NewClient(brokers, config(version))
		if err != nil {
			return err
		}
		defer client.Close()
		if _, err := client.GetOffset(topic, 0, sarama.OffsetNewest); err != nil {
			return err
		}
		_, err = client.GetOffset(topic, 0, sarama.OffsetOldest)
		return err
	})

	if version.IsAtLeast(sarama.V0_10_2_0) {
		step("consumer group", func() error {
			g, err := sarama.NewConsumerGroup(brokers, group, config(version))
			if err != nil {
				return err
			}
			defer g.Close()
			h := &groupHandler{want: recordsPerBatch, done: make(chan struct{})}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			go func() {
				select {
				case <-h.done:
					// Let one commit interval pass so the marked offsets are committed.
					time.Sleep(300 * time.Millisecond)
					cancel()
				case <-ctx.Done():
				}
			}()
			for ctx.Err() == nil {
				if err := g.Consume(ctx, []string{topic}, h); err != nil {
					return err
				}
			}
			if h.seen < h.want {
				return fmt.Errorf("group saw %d of %d messages", h.seen, h.want)
			}
			return nil
		})
	}

	admin("list groups", func(a sarama.ClusterAdmin) error { _, err := a.ListConsumerGroups(); return err })
	admin("describe groups", func(a sarama.ClusterAdmin) error { _, err := a.DescribeConsumerGroups([]string{group}); return err })
	admin("group offsets", func(a sarama.ClusterAdmin) error {
		_, err := a.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2}})
		return err
	})
	admin("delete topic", func(a sarama.ClusterAdmin) error { return a.DeleteTopic(*prefix + "-validate") })
}
