"""clickpath's wire format, written from the published contract only (schemas/*.avsc, schemas/registry.json).

Every record value is Confluent-framed: byte 0 is 0x00, bytes 1-4 hold the schema id as a big-endian
unsigned int, and the Avro binary body follows. A reader looks the writer's schema up by that id and
resolves it against its own (reader) schema. Nothing here imports or copies clickpath's Rust code.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import fastavro

MAGIC = 0


class WireError(ValueError):
    """A record that is not a valid clickpath value."""


class Registry:
    """The schema ids of schemas/registry.json, with each schema parsed by fastavro."""

    def __init__(self, schemas_dir: Path):
        index = json.loads((schemas_dir / "registry.json").read_text())
        self.by_id: dict[int, dict] = {}
        self.latest: dict[str, int] = {}
        for subject in index["subjects"]:
            for version in subject["versions"]:
                raw = json.loads((schemas_dir / version["file"]).read_text())
                # Each parse gets its own named-type table: EventType is defined inline in several files.
                parsed = fastavro.parse_schema(raw, named_schemas={})
                self.by_id[version["id"]] = parsed
                name = subject["subject"]
                if version["id"] >= self.latest.get(name, -1):
                    self.latest[name] = version["id"]

    def encode(self, subject: str, record: dict) -> bytes:
        """Frames `record` with the latest schema id of `subject` (e.g. io.clickpath.ClickEvent)."""
        sid = self.latest[subject]
        body = io.BytesIO()
        fastavro.schemaless_writer(body, self.by_id[sid], record)
        return struct.pack(">bI", MAGIC, sid) + body.getvalue()

    def decode(self, value: bytes | None, expect_subject: str) -> dict:
        """Decodes a framed value with its writer schema (by id), resolved against the latest schema of
        `expect_subject` as the reader schema. Raises WireError on anything malformed."""
        if value is None or len(value) < 5:
            raise WireError(f"value of {0 if value is None else len(value)} bytes is shorter than the 5-byte header")
        magic, sid = struct.unpack(">bI", value[:5])
        if magic != MAGIC:
            raise WireError(f"magic byte {magic:#x}, expected 0x00")
        writer = self.by_id.get(sid)
        if writer is None:
            raise WireError(f"unknown schema id {sid}")
        reader = self.by_id[self.latest[expect_subject]]
        buf = io.BytesIO(value[5:])
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as e:  # fastavro raises several types for bad bodies and failed resolution
            raise WireError(f"schema id {sid}: Avro body does not decode as {expect_subject}: {e}") from e
        if buf.tell() != len(value) - 5:
            raise WireError(f"schema id {sid}: {len(value) - 5 - buf.tell()} trailing bytes after the Avro body")
        return record


def kafka_config(brokers: str, properties: list[str]) -> dict:
    """librdkafka settings: bootstrap servers plus `key=value` pairs (security settings, for example)."""
    cfg = {"bootstrap.servers": brokers}
    for p in properties:
        key, sep, value = p.partition("=")
        if not sep:
            raise SystemExit(f"--property {p!r}: expected key=value")
        cfg[key.strip()] = value.strip()
    return cfg
