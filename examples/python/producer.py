#!/usr/bin/env python3
"""Sends click events to clickpath's raw topic with confluent-kafka and fastavro.

Each user makes one shopping session (landing page, product views, cart, checkout, payment, purchase);
with --fraud one extra user also tests stolen cards (many failed payments with different cards in a few
minutes), which clickpath's detector reports as a CARD_TESTING alert. Events are keyed by user id, as
clickpath expects. Prints a JSON summary (counts and event ids) on stdout.

    python producer.py --brokers 127.0.0.1:19092 --topic clickpath.clicks.raw --users 50 --fraud
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from clickpath_wire import Registry, kafka_config

SUBJECT = "io.clickpath.ClickEvent"
CATEGORIES = ["electronics/phones", "electronics/laptops", "home/kitchen", "fashion/shoes", "books/fiction"]


def event(user: str, session: str, kind: str, t_ms: int, **fields) -> dict:
    base = {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "session_id": session,
        "event_type": kind,
        "event_time": t_ms,
        "device": "mobile",
        "country": "DE",
        "channel": "organic",
        "extras": {"client": "python-example"},
    }
    base.update(fields)
    return base


def shopping_session(rng: random.Random, user: str, start_ms: int) -> list[dict]:
    session = f"py-{uuid.uuid4().hex[:12]}"
    t = start_ms
    out = [event(user, session, "PAGE_VIEW", t, referrer="https://search.example/")]
    item, price = f"item-{rng.randrange(1000)}", round(rng.uniform(5, 500), 2)
    category = rng.choice(CATEGORIES)
    for _ in range(rng.randint(1, 4)):
        t += rng.randint(3_000, 40_000)
        out.append(event(user, session, "PRODUCT_VIEW", t, item_id=item, category=category, price=price, currency="EUR"))
    if rng.random() < 0.3:
        t += rng.randint(2_000, 20_000)
        out.append(event(user, session, "SEARCH", t, search_query="running shoes"))
    if rng.random() < 0.6:
        t += rng.randint(2_000, 20_000)
        out.append(event(user, session, "ADD_TO_CART", t, item_id=item, price=price, currency="EUR", quantity=1))
        if rng.random() < 0.6:
            t += rng.randint(5_000, 60_000)
            out.append(event(user, session, "BEGIN_CHECKOUT", t))
            t += rng.randint(5_000, 60_000)
            card = f"card-{uuid.uuid4().hex[:16]}"
            out.append(event(user, session, "PAYMENT_ATTEMPT", t,
                             payment={"status": "SUCCEEDED", "method": "card", "card_fingerprint": card}))
            t += rng.randint(500, 3_000)
            out.append(event(user, session, "PURCHASE", t, order_id=f"order-{uuid.uuid4().hex[:10]}",
                             order_value=price, currency="EUR"))
    return out


def card_testing(user: str, start_ms: int, attempts: int = 8) -> list[dict]:
    """Failed payments with a different card every 10 s: the card-testing pattern."""
    session = f"py-fraud-{uuid.uuid4().hex[:8]}"
    out = [event(user, session, "PAGE_VIEW", start_ms), event(user, session, "BEGIN_CHECKOUT", start_ms + 2_000)]
    for i in range(attempts):
        out.append(event(user, session, "PAYMENT_ATTEMPT", start_ms + 5_000 + i * 10_000,
                         payment={"status": "FAILED", "method": "card", "card_fingerprint": f"stolen-{i}-{uuid.uuid4().hex[:8]}"}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True, help="clickpath's raw topic (topics.raw)")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--fraud", action="store_true", help="add one card-testing user")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--schemas", type=Path, default=Path(__file__).resolve().parents[2] / "schemas")
    ap.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka setting, e.g. security.protocol=SASL_SSL (repeatable)")
    args = ap.parse_args()

    registry = Registry(args.schemas)
    rng = random.Random(args.seed)
    # Event time a few minutes in the past, so every session's events stay behind the wall clock.
    start = int(time.time() * 1000) - 30 * 60 * 1000
    events: list[dict] = []
    for u in range(args.users):
        events += shopping_session(rng, f"py-user-{args.seed}-{u}", start + rng.randint(0, 60_000))
    fraud_user = None
    if args.fraud:
        fraud_user = f"py-fraudster-{args.seed}"
        events += card_testing(fraud_user, start + 120_000)
    # Per user, in event-time order (the order a platform would publish them).
    events.sort(key=lambda e: (e["user_id"], e["event_time"]))

    producer = Producer({**kafka_config(args.brokers, args.property), "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(str(err))

    for e in events:
        producer.produce(args.topic, key=e["user_id"].encode(), value=registry.encode(SUBJECT, e), on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining or failures:
        print(f"producer: {remaining} undelivered, {len(failures)} failed: {failures[:3]}", file=sys.stderr)
        return 1
    summary = {
        "topic": args.topic,
        "events": len(events),
        "users": args.users + (1 if fraud_user else 0),
        "fraud_user": fraud_user,
        "event_ids": [e["event_id"] for e in events],
    }
    json.dump(summary, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
