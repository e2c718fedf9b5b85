// The gRPC door with Node's @grpc/grpc-js, the client loaded at run time from
// proto/strom/v1/strom.proto by @grpc/proto-loader. Usage: node grpc_client.js HOST:PORT TOPIC
// Produces keyed records (unary and streamed), reads them back with Subscribe from earliest,
// works a queue (accept every record), checks health; prints one JSON line with what it saw.
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [addr, topic] = process.argv.slice(2);
const root = path.resolve(__dirname, "../../../proto");
const def = loader.loadSync(path.join(root, "strom/v1/strom.proto"), {
  includeDirs: [root], keepCase: true, longs: Number, defaults: true, oneofs: true,
});
const strom = grpc.loadPackageDefinition(def).strom.v1;
const client = new strom.Strom(addr, grpc.credentials.createInsecure());
const call = (m, req) => new Promise((ok, fail) =>
  client[m](req, { deadline: Date.now() + 10000 }, (e, r) => (e ? fail(e) : ok(r))));

async function main() {
  const out = {};
  await call("CreateTopic", { name: topic, partitions: 2, configs: {} });
  const records = Array.from({ length: 10 }, (_, i) => ({
    key: Buffer.from(`key-${i}`), value: Buffer.from(`unary-${i}`),
    headers: [{ key: "n", value: Buffer.from(String(i)) }],
  }));
  const unary = await call("Produce", { topic, records });
  out.unary = unary.records.map((r) => [r.partition, r.offset]);

  const stream = client.ProduceStream();
  const acks = [];
  const streamed = new Promise((ok, fail) => {
    stream.on("data", (r) => acks.push(r.records.length));
    stream.on("end", ok);
    stream.on("error", fail);
  });
  for (let j = 0; j < 5; j++) {
    stream.write({ topic, partition: 0, records: [{ value: Buffer.from(`stream-${j}`) }] });
  }
  stream.end();
  await streamed;
  out.streamed = acks;

  // Subscribe from earliest until all 15 records arrived.
  out.subscribed = await new Promise((ok, fail) => {
    const got = [];
    const sub = client.Subscribe({ topics: [topic], from: "earliest" });
    sub.on("data", (r) => {
      got.push({ partition: r.partition, offset: r.offset, key: r.key ? r.key.toString() : null,
        value: r.value.toString(), headers: r.headers.map((h) => [h.key, h.value.toString()]) });
      if (got.length === 15) { sub.cancel(); ok(got); }
    });
    sub.on("error", (e) => { if (e.code !== grpc.status.CANCELLED) fail(e); });
  });

  // A queue: accept every record.
  out.queued = await new Promise((ok, fail) => {
    const got = [];
    const q = client.Queue();
    q.on("data", (m) => {
      got.push([m.record.value.toString(), m.delivery_count]);
      q.write({ ack: { receipt: m.receipt, type: "ACCEPT" } });
      if (got.length === 15) { q.end(); q.cancel(); ok(got); }
    });
    q.on("error", (e) => { if (e.code !== grpc.status.CANCELLED) fail(e); });
    q.write({ subscribe: { group: `node-${topic}`, topics: [topic], from: "earliest", max_in_flight: 5 } });
  });

  // A refusal carries its status code.
  try {
    await call("Produce", { topic: "no-such-topic", records: [{ value: Buffer.from("x") }] });
    out.missing = "accepted";
  } catch (e) {
    out.missing = e.code === grpc.status.NOT_FOUND ? "NOT_FOUND" : String(e.code);
  }
  console.log(JSON.stringify(out));
  client.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
