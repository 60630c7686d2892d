#!/usr/bin/env python3
"""Reads clickpath's prediction and alert topics with confluent-kafka and fastavro, as a downstream
service or a fraud team would, and fails if any record does not decode.

Each value's schema id selects the writer schema from schemas/registry.json; it is resolved against the
reader schema of the record type the topic carries (Prediction, FraudAlert). Waits until at least the
expected counts have arrived (or --timeout), then prints a JSON summary on stdout.

    python consumer.py --brokers 127.0.0.1:19092 --predictions clickpath.predictions \\
        --alerts clickpath.alerts --min-predictions 100 --min-alerts 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import Consumer, KafkaError

from clickpath_wire import Registry, WireError, kafka_config

PREDICTION = "io.clickpath.Prediction"
ALERT = "io.clickpath.FraudAlert"


def check_prediction(p: dict) -> str | None:
    """Field-level sanity a consumer would rely on; returns what is wrong, if anything."""
    if not 0.0 <= p["purchase_probability"] <= 1.0:
        return f"purchase_probability {p['purchase_probability']} outside [0, 1]"
    if not p["model_version"]:
        return "empty model_version"
    if any(not 0.0 <= a["probability"] <= 1.0 for a in p["next_actions"]):
        return "a next-action probability outside [0, 1]"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--predictions", required=True, help="clickpath's prediction topic (topics.predictions)")
    ap.add_argument("--alerts", required=True, help="clickpath's alert topic (topics.alerts)")
    ap.add_argument("--min-predictions", type=int, default=1)
    ap.add_argument("--min-alerts", type=int, default=0)
    ap.add_argument("--event-ids", type=Path, help="producer summary JSON; predictions must be for these events")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the expected counts")
    ap.add_argument("--schemas", type=Path, default=Path(__file__).resolve().parents[2] / "schemas")
    ap.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka setting, e.g. security.protocol=SASL_SSL (repeatable)")
    args = ap.parse_args()

    registry = Registry(args.schemas)
    expected_ids = None
    if args.event_ids:
        expected_ids = set(json.loads(args.event_ids.read_text())["event_ids"])

    consumer = Consumer({
        **kafka_config(args.brokers, args.property),
        "group.id": f"clickpath-python-example-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # clickpath may write with transactions; never read aborted or open ones.
        "isolation.level": "read_committed",
    })
    subject_of = {args.predictions: PREDICTION, args.alerts: ALERT}
    consumer.subscribe(list(subject_of))

    errors: list[str] = []
    predictions: list[dict] = []
    alerts: list[dict] = []
    schema_ids: Counter = Counter()
    predicted_ids: set[str] = set()

    def have_enough() -> bool:
        # With --event-ids, every event sent must have its own prediction (duplicates do not count).
        enough = len(predicted_ids) if expected_ids is None else len(predicted_ids & expected_ids)
        return enough >= args.min_predictions and len(alerts) >= args.min_alerts
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            if have_enough():
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    errors.append(f"kafka: {msg.error()}")
                continue
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            try:
                record = registry.decode(msg.value(), subject_of[msg.topic()])
            except WireError as e:
                errors.append(f"{where}: {e}")
                continue
            schema_ids[int.from_bytes(msg.value()[1:5], "big")] += 1
            key = msg.key().decode() if msg.key() else None
            if key != record["user_id"]:
                errors.append(f"{where}: key {key!r} is not the record's user_id")
            if msg.topic() == args.predictions:
                problem = check_prediction(record)
                if problem:
                    errors.append(f"{where}: {problem}")
                if expected_ids is not None and record["event_id"] not in expected_ids:
                    errors.append(f"{where}: prediction for an event this run did not produce")
                predictions.append(record)
                predicted_ids.add(record["event_id"])
            else:
                alerts.append(record)
    finally:
        consumer.close()

    summary = {
        "predictions": len(predictions),
        "distinct_events_predicted": len(predicted_ids),
        "alerts": len(alerts),
        "alert_types": dict(Counter(a["alert_type"] for a in alerts)),
        "schema_ids": {str(k): v for k, v in sorted(schema_ids.items())},
        "mean_purchase_probability": (
            round(sum(p["purchase_probability"] for p in predictions) / len(predictions), 4) if predictions else None
        ),
        "errors": errors[:20],
    }
    json.dump(summary, sys.stdout)
    print()
    if errors:
        print(f"consumer: {len(errors)} record(s) failed", file=sys.stderr)
        return 1
    if not have_enough():
        print(f"consumer: timed out with {len(predicted_ids)}/{args.min_predictions} events predicted and "
              f"{len(alerts)}/{args.min_alerts} alerts", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
