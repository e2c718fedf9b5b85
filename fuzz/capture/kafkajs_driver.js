// Drives kafkajs (tests/e2e/js/node_modules) through one broker, so that capture.py can record
// the requests it sends: admin calls, a plain and an idempotent producer (none and gzip: the
// only codecs kafkajs has without extra packages), a consumer group that commits, and the group
// admin calls. Each step is bounded in time; a failing step is reported and the next one runs.
//
// Usage: node kafkajs_driver.js BOOTSTRAP PREFIX   (NODE_PATH must reach kafkajs)

const { Kafka, CompressionTypes, logLevel } = require("kafkajs");

const [bootstrap, prefix] = process.argv.slice(2);
const STEP_TIMEOUT_MS = 20000;
const RECORDS_PER_BATCH = 8;

const kafka = new Kafka({
  clientId: "kafkajs-capture",
  brokers: [bootstrap],
  logLevel: logLevel.NOTHING,
  retry: { retries: 1, initialRetryTime: 100 },
});

async function step(name, f) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
  });
  try {
    await Promise.race([f(), timeout]);
    console.error(`kafkajs: ${name}: ok`);
  } catch (e) {
    console.error(`kafkajs: ${name}: ${e.message}`);
  } finally {
    clearTimeout(timer);
  }
}

function messages(tag) {
  return Array.from({ length: RECORDS_PER_BATCH }, (_, i) => ({
    key: `key-${i}`,
    value: `kafkajs ${tag} ${i} `.repeat(6),
    headers: { h: String(i) },
  }));
}

async function main() {
  const topic = `${prefix}-data`;
  const group = `${prefix}-group`;
  const admin = kafka.admin();
  await step("admin connect", () => admin.connect());
  await step("create topics", () =>
    admin.createTopics({ topics: [{ topic, numPartitions: 2 }, { topic: `${prefix}-tmp`, numPartitions: 1 }] }));
  await step("create topics (validate only)", () =>
    admin.createTopics({ validateOnly: true, topics: [{ topic: `${prefix}-validate` }] }));
  await step("list topics", () => admin.listTopics());
  await step("fetch topic metadata", () => admin.fetchTopicMetadata({ topics: [topic] }));
  await step("describe cluster", () => admin.describeCluster());
  await step("describe configs", () =>
    admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: topic }] }));
  await step("create partitions", () => admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] }));

  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await step("producer connect", () => producer.connect());
  await step("produce none", () => producer.send({ topic, messages: messages("none") }));
  await step("produce gzip", () =>
    producer.send({ topic, compression: CompressionTypes.GZIP, messages: messages("gzip") }));
  await step("produce acks=1", () => producer.send({ topic, acks: 1, messages: messages("acks1") }));
  await step("producer disconnect", () => producer.disconnect());

  const idem = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await step("idempotent connect", () => idem.connect());
  await step("idempotent produce", () => idem.send({ topic, acks: -1, messages: messages("idempotent") }));
  await step("idempotent gzip", () =>
    idem.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages: messages("idem-gzip") }));
  await step("idempotent disconnect", () => idem.disconnect());

  await step("fetch topic offsets", () => admin.fetchTopicOffsets(topic));
  await step("fetch topic offsets by timestamp", () => admin.fetchTopicOffsetsByTimestamp(topic, Date.now() - 60000));

  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500 });
  await step("consumer group", async () => {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    let seen = 0;
    await new Promise((resolve, reject) => {
      consumer
        .run({
          autoCommitInterval: 100,
          eachMessage: async () => {
            seen += 1;
            if (seen === RECORDS_PER_BATCH) resolve();
          },
        })
        .catch(reject);
    });
    // One heartbeat and one commit interval before leaving the group.
    await new Promise((r) => setTimeout(r, 700));
    await consumer.commitOffsets([{ topic, partition: 0, offset: "1" }]).catch(() => {});
    await consumer.disconnect();
  });

  await step("list groups", () => admin.listGroups());
  await step("describe groups", () => admin.describeGroups([group]));
  await step("fetch offsets", () => admin.fetchOffsets({ groupId: group, topics: [topic] }));
  await step("set offsets", () => admin.setOffsets({ groupId: group, topic, partitions: [{ partition: 0, offset: "0" }] }));
  await step("reset offsets", () => admin.resetOffsets({ groupId: group, topic, earliest: true }));
  await step("delete groups", () => admin.deleteGroups([group]));
  await step("delete topics", () => admin.deleteTopics({ topics: [`${prefix}-tmp`] }));
  await step("admin disconnect", () => admin.disconnect());
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`kafkajs: ${e.stack}`);
    process.exit(1);
  },
);
