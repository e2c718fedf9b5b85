// kafkajs transactional producer: commit, abort, commit into one topic. test_transactions.py
// checks what read_committed and read_uncommitted consumers see.
const { Kafka, logLevel } = require('kafkajs');

const [broker, topic] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'kjs-txn', brokers: [broker], logLevel: logLevel.ERROR });

(async () => {
  const producer = kafka.producer({ transactionalId: 'kjs-txn-1', idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (const [value, commit] of [['js-1', true], ['js-2', false], ['js-3', true]]) {
    const txn = await producer.transaction();
    await txn.send({ topic, messages: [{ value }] });
    if (commit) await txn.commit(); else await txn.abort();
  }
  await producer.disconnect();
})().catch((e) => { console.error(e); process.exit(1); });
