"""The chaos suite's load: an idempotent acks=all producer run as its own process.

    python load_producer.py '<json config>'

Config keys: bootstrap, topic, partitions, out (a file path), value_bytes, outstanding_max
(records sent but not yet reported, at most), extra (librdkafka config on top).

Record `seq` of partition `p` (every partition counts from 0, records go round-robin) has the
value `chaos.value(p, seq, value_bytes)`, so any stored value can be checked against what was
sent. The producer stays up while the broker is killed and restarted: librdkafka reconnects and
retries, the broker must deduplicate the retries of batches it had appended before the kill.

Writes lines to `out` (flushed at least every 50 ms, so a reader sees acks soon after they come):

    A <partition> <offset> <seq> <count> <monotonic s>   count records acknowledged: seq..seq+count-1
                                                          at offset..offset+count-1 (first ack's time)
    F <partition> <seq> <error name>                      a record whose delivery failed
    E <error name> <text>                                 a client error (error_cb)
    S <partition> <records sent>                          at exit, per partition
    X <text>                                              a fatal error; the process exits 3
    Q <records outstanding at exit>                       last line (0 after a full drain)

SIGTERM stops producing; what is outstanding is flushed (`drain_s`, default 60 s), then the S lines
are written and the process exits 0.
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from values import value  # noqa: E402

from confluent_kafka import Producer  # noqa: E402

cfg = json.loads(sys.argv[1])
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)

out = open(cfg["out"], "a", buffering=1 << 16)
fatal = []


def on_error(err):
    out.write(f"E {err.name()} {str(err.str()).replace(chr(10), ' ')}\n")
    if err.fatal():
        fatal.append(err)


conf = {
    "bootstrap.servers": cfg["bootstrap"],
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 2,
    "batch.num.messages": 500,
    # The broker is down for a second or so per cycle: records must outlive that by far, so every
    # record is retried until acknowledged (a timed-out record would be reported as failed).
    "message.timeout.ms": 300000,
    "request.timeout.ms": 5000,
    "reconnect.backoff.ms": 10,
    "reconnect.backoff.max.ms": 100,
    "retry.backoff.ms": 20,
    "retry.backoff.max.ms": 100,
    "socket.connection.setup.timeout.ms": 2000,
    "error_cb": on_error,
}
conf.update(cfg.get("extra", {}))
producer = Producer(conf)
topic = cfg["topic"]
partitions = int(cfg["partitions"])
value_bytes = int(cfg.get("value_bytes", 100))
outstanding_max = int(cfg.get("outstanding_max", 20000))

sent = [0] * partitions
reported = 0
# Per partition, the run of acknowledgements being gathered: [offset, seq, count, time].
runs = [None] * partitions


def emit_run(p):
    r = runs[p]
    if r is not None:
        out.write(f"A {p} {r[0]} {r[1]} {r[2]} {r[3]:.6f}\n")
        runs[p] = None


def on_delivery(err, msg):
    global reported
    reported += 1
    p = msg.partition()
    seq = int(msg.value()[3:13])
    if err is not None:
        emit_run(p)
        out.write(f"F {p} {seq} {err.name()}\n")
        return
    off = msg.offset()
    r = runs[p]
    if r is not None and r[0] + r[2] == off and r[1] + r[2] == seq:
        r[2] += 1
        return
    emit_run(p)
    runs[p] = [off, seq, 1, time.monotonic()]


def flush_out():
    for p in range(partitions):
        emit_run(p)
    out.flush()


last_flush = time.monotonic()
nxt = 0
while not stop and not fatal:
    if sum(sent) - reported < outstanding_max:
        p = nxt
        try:
            producer.produce(topic, value=value(p, sent[p], value_bytes), partition=p,
                             on_delivery=on_delivery)
            sent[p] += 1
            nxt = (nxt + 1) % partitions
            producer.poll(0)
        except BufferError:
            producer.poll(0.005)
    else:
        producer.poll(0.005)
    now = time.monotonic()
    if now - last_flush >= 0.05:
        flush_out()
        last_flush = now

if not fatal:
    deadline = time.monotonic() + float(cfg.get("drain_s", 60))
    while len(producer) > 0 and time.monotonic() < deadline and not fatal:
        producer.poll(0.05)
        flush_out()
flush_out()
for p in range(partitions):
    out.write(f"S {p} {sent[p]}\n")
if fatal:
    out.write(f"X {fatal[0].name()} {fatal[0].str()}\n")
out.write(f"Q {len(producer)}\n")  # records still outstanding at exit (0 after a full drain)
out.close()
sys.exit(3 if fatal else 0)
