#!/usr/bin/env python3
"""How long a new Kafka producer takes to deliver its first record, with and without idempotence, and how
long when it was created some time before the send (BENCHMARKS.md, latency finding 1).

Uses confluent-kafka (librdkafka, like the stages). Run with the interop environment that
scripts/python-interop.sh installs:  target/venv-interop/bin/python scripts/first-send.py [BROKERS]
"""
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

brokers = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:19092"
topic = "first-send-%d" % int(time.time() * 1000)
admin = AdminClient({"bootstrap.servers": brokers})
admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
time.sleep(1.5)


def first_delivery_ms(idempotent, created_before_s):
    p = Producer({"bootstrap.servers": brokers, "enable.idempotence": idempotent, "acks": "all",
                  "linger.ms": 0})
    time.sleep(created_before_s)
    p.poll(0)
    t0 = time.time()
    got = []
    p.produce(topic, b"x", key=b"k", on_delivery=lambda err, msg: got.append(time.time() - t0))
    p.flush(10)
    return got[0] * 1000


for idempotent, before in [("true", 0.0), ("true", 0.2), ("true", 1.0), ("false", 0.0)]:
    print("idempotence %-5s created %.1f s before the send: first delivery %.1f ms"
          % (idempotent, before, first_delivery_ms(idempotent, before)))
admin.delete_topics([topic])
