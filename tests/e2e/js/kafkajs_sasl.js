// kafkajs over SASL_SSL: produce and consume as a SCRAM or PLAIN user, and a wrong password
// refused. Usage: node kafkajs_sasl.js BROKER CA_FILE MECHANISM USER PASSWORD TOPIC
// (MECHANISM as kafkajs names it: scram-sha-512, scram-sha-256, plain). Prints one JSON line.
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const [broker, caFile, mechanism, username, password, topic] = process.argv.slice(2);
const ssl = { ca: [fs.readFileSync(caFile, 'utf-8')], servername: 'localhost' };
const client = (pw) => new Kafka({
  clientId: 'kjs-sasl', brokers: [broker], ssl, sasl: { mechanism, username, password: pw },
  logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 5000, authenticationTimeout: 5000,
});

(async () => {
  const out = {};
  const kafka = client(password);
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 50; i++) messages.push({ value: 'm' + i });
  out.produced = (await producer.send({ topic, messages, acks: -1 })).map((r) => r.errorCode);
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: 'kjs-sasl-g', sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve) => {
    consumer.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()); if (got.length === 50) resolve(); } });
    setTimeout(resolve, 60000);
  });
  await consumer.disconnect();
  out.consumed = got;
  const bad = client(password + '-wrong').producer();
  try {
    await bad.connect();
    out.wrong_password = 'connected';
    await bad.disconnect();
  } catch (e) {
    out.wrong_password = e.name + ': ' + e.message;
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
