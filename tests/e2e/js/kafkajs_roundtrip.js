// kafkajs (old, non-flexible protocol versions): admin, keyed produce with headers, a group
// consumer, committed offsets, group listing and description, configs, topic deletion.
// Prints one JSON line with what it saw; test_kafkajs.py checks it.
const { Kafka, logLevel } = require('kafkajs');

const broker = process.argv[2];
const N = 300;
const kafka = new Kafka({ clientId: 'kjs', brokers: [broker], logLevel: logLevel.ERROR });

(async () => {
  const out = {};
  const admin = kafka.admin();
  await admin.connect();
  out.created = await admin.createTopics({ topics: [{ topic: 'kjs', numPartitions: 3 }] });
  out.topics = await admin.listTopics();
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < N; i++) messages.push({ key: 'k' + (i % 10), value: 'v' + i, headers: { h: 'x' + i } });
  out.produced = (await producer.send({ topic: 'kjs', messages })).map((r) => [r.partition, r.errorCode]);
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: 'kjs-g', sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic: 'kjs', fromBeginning: true });
  const got = [];
  await new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        got.push([partition, message.key.toString(), message.value.toString(), message.headers.h.toString()]);
        if (got.length === N) resolve();
      },
    });
    setTimeout(resolve, 60000);
  });
  out.consumed = got;
  await consumer.disconnect();
  out.committed = (await admin.fetchOffsets({ groupId: 'kjs-g', topics: ['kjs'] }))[0].partitions
    .map((p) => [p.partition, Number(p.offset)]);
  out.groups = (await admin.listGroups()).groups.map((g) => g.groupId);
  out.state = (await admin.describeGroups(['kjs-g'])).groups[0].state;
  const cfg = await admin.describeConfigs({ resources: [{ type: 2, name: 'kjs' }], includeSynonyms: false });
  out.retention = cfg.resources[0].configEntries.find((e) => e.configName === 'retention.ms').configValue;
  await admin.deleteTopics({ topics: ['kjs'] });
  out.after_delete = await admin.listTopics();
  await admin.disconnect();
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => {
  console.error('FAIL', e);
  process.exit(1);
});
