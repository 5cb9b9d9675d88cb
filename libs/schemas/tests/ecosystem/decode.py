#!/usr/bin/env python3
"""Reads Eddy's Kafka record values the way a consumer outside Eddy would: with fastavro, an
independent Avro implementation, and the writer schema fetched from the schema registry by the
id in each record's Confluent frame (magic byte 0, 4-byte big-endian schema id, Avro binary).

Input (stdin, JSON):
    {"registry": "<base URL of the Confluent-compatible API>",
     "records": [{"topic": "...", "value_hex": "<the record value, hex>"}, ...]}
Output (stdout, JSON), one entry per record in input order:
    [{"topic": "...", "schema_id": 7, "schema_name": "<full name>", "value": {...}}, ...]

Timestamps (fastavro returns datetimes for timestamp-millis) are turned back into integer
milliseconds since the Unix epoch, so the output compares with Eddy's JSON. Any record that is
not a well-formed frame, or whose Avro body does not decode to exactly its length, fails the
run with a message on stderr. Only the standard library and fastavro.
"""

import datetime
import io
import json
import struct
import sys
import urllib.error
import urllib.request

import fastavro

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MILLISECOND = datetime.timedelta(milliseconds=1)


def fail(message):
    sys.exit(f"decode.py: {message}")


class Registry:
    """Writer schemas by id, each fetched once with GET {url}/schemas/ids/{id}."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.schemas = {}

    def schema(self, schema_id):
        if schema_id not in self.schemas:
            url = f"{self.url}/schemas/ids/{schema_id}"
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    answer = json.load(response)
            except (urllib.error.URLError, ValueError) as error:
                fail(f"fetching schema {schema_id} from {url}: {error}")
            if answer.get("schemaType", "AVRO") != "AVRO":
                fail(f"schema {schema_id} is {answer['schemaType']}, not AVRO")
            raw = json.loads(answer["schema"])
            self.schemas[schema_id] = (full_name(raw), fastavro.parse_schema(raw))
        return self.schemas[schema_id]


def full_name(schema):
    name = schema.get("name", "")
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def plain(value):
    """The decoded value with datetimes as epoch milliseconds, ready for JSON."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return (value - EPOCH) // MILLISECOND
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def decode(registry, record):
    topic = record["topic"]
    framed = bytes.fromhex(record["value_hex"])
    if len(framed) < HEADER.size:
        fail(f"{topic}: {len(framed)} bytes, too short for a Confluent frame")
    magic, schema_id = HEADER.unpack_from(framed)
    if magic != MAGIC_BYTE:
        fail(f"{topic}: first byte is {magic:#04x}, not the magic byte 0")
    name, schema = registry.schema(schema_id)
    body = io.BytesIO(framed[HEADER.size :])
    value = fastavro.schemaless_reader(body, schema)
    left = len(framed) - HEADER.size - body.tell()
    if left:
        fail(f"{topic}: {left} bytes left after decoding with schema {schema_id} ({name})")
    return {"topic": topic, "schema_id": schema_id, "schema_name": name, "value": plain(value)}


def main():
    request = json.load(sys.stdin)
    registry = Registry(request["registry"])
    decoded = [decode(registry, record) for record in request["records"]]
    json.dump(decoded, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
