"""A generated corpus of malformed, oversized and hostile payloads for the ingest worker.

Deterministic (seeded) and unique per index (so each can be traced to its dead letter by
SHA-256). Families: random bytes, broken JSON, JSON of the wrong shape, deeply nested JSON,
oversized messages, valid run messages with one field corrupted (bad numbers, NaN, wrong
well ids, uncleaned sample numbers, control characters, unknown fields, another
device's id, a kind that does not belong on `runs`), and truncated run messages.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any

from core.wire import MAX_MESSAGE_BYTES, RunMessage, encode_message

Mutator = Callable[[dict[str, Any], random.Random, int], Any]


def _set(path: list[Any], value: Any) -> Mutator:
    def mutate(doc: dict[str, Any], rng: random.Random, i: int) -> Any:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(rng, i) if callable(value) else value
        return doc

    return mutate


def _drop(key: str) -> Mutator:
    def mutate(doc: dict[str, Any], rng: random.Random, i: int) -> Any:
        doc.pop(key, None)
        return doc

    return mutate


RUN_MUTATORS: list[Mutator] = [
    _set(["wells", "A1", "confidence"], lambda r, i: 1.0 + r.random() + i),
    _set(["wells", "B3", "state"], lambda r, i: f"exploded-{i}"),
    _set(["wells", "C7", "box"], lambda r, i: [1, 2, 3]),
    _set(["edit"], lambda r, i: -1 - i),
    _set(["edit"], lambda r, i: 2**40 + i),
    _set(["schema_version"], lambda r, i: 2 + i),
    _set(["kind"], lambda r, i: f"runx{i}"),
    _set(["kind"], "ack"),
    _set(["sample_number"], lambda r, i: f' =HYPERLINK("http://evil/{i}")'),  # not cleaned
    _set(["sample_number"], lambda r, i: f"S-{i}\x00\x07"),
    _set(["sample_number"], lambda r, i: "S" * (65 + i % 100)),
    _set(["operator"], lambda r, i: f"op\r\n{i}"),
    _set(["description"], lambda r, i: "x" * (2001 + i % 50)),
    _set(["captured_at"], lambda r, i: f"2026-11-26T08:00:{i % 60:02d}"),  # no timezone
    _set(["processed_at"], lambda r, i: f"not a date {i}"),
    _set(["run_id"], lambda r, i: f"not-a-uuid-{i}"),
    _set(["plate_format"], lambda r, i: 95 + i % 3 if i % 3 != 1 else 97),
    _set(["distribution", "3"], lambda r, i: 9 + i % 7),
    _set(["rows", 0, "label"], lambda r, i: "Z"),
    _set(["device_id"], lambda r, i: f"dev-../{i}"),
    _set(["site_id"], lambda r, i: f"other-site-{i}"),  # valid slug, another site
    _set(["unexpected_field"], lambda r, i: i),
    _set(["supersedes"], None),  # with run_id: a run cannot supersede itself
    _set(["model", "sha256"], lambda r, i: f"{i:x}"),
    _set(["images"], lambda r, i: [{"role": "raw", "key": f"../../etc/passwd{i}"}]),
    _set(["wells", "A1"], lambda r, i: None),
    _drop("wells"),
    _drop("run_id"),
]


def _self_superseding(doc: dict[str, Any], rng: random.Random, i: int) -> Any:
    doc["supersedes"] = doc["run_id"]
    return doc


RUN_MUTATORS[22] = _self_superseding


def _random_bytes(rng: random.Random, i: int) -> bytes:
    return f"{i}:".encode() + rng.randbytes(rng.randrange(0, 512))


def _broken_json(rng: random.Random, i: int) -> bytes:
    return rng.choice(
        [f'{{"kind": "run", "n": {i}', f"[{i},", f'{{"a": {i}}}}}', f"nul{i}"]
    ).encode()


def _wrong_shape(rng: random.Random, i: int) -> bytes:
    value = rng.choice(
        [[i], i, f"s{i}", None, True, {"kind": None, "i": i}, {"kind": ["run"], "i": i}]
    )
    return json.dumps(value).encode() if value is not None else f"null {i}".encode()


def _deep(rng: random.Random, i: int) -> bytes:
    depth = 10_000 + i % 1000
    return ("[" * depth + str(i) + "]" * depth).encode()


def _oversized(rng: random.Random, i: int) -> bytes:
    pad = "x" * (MAX_MESSAGE_BYTES + 1 + i % 1000)
    return json.dumps({"kind": "run", "run_id": str(uuid.uuid4()), "pad": pad}).encode()


def corpus(template: RunMessage, n: int, *, seed: int = 7, runs_share: float = 0.2) -> list[bytes]:
    """`n` unique hostile payloads; about `runs_share` of them corrupted run messages."""
    rng = random.Random(seed)
    base = json.loads(encode_message(template))
    simple = [_random_bytes, _broken_json, _wrong_shape, _deep]
    out: list[bytes] = []
    seen: set[bytes] = set()
    i = 0
    while len(out) < n:
        i += 1
        roll = rng.random()
        if roll < runs_share:
            doc = json.loads(json.dumps(base))
            doc["run_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            mutator = RUN_MUTATORS[i % len(RUN_MUTATORS)]
            payload = json.dumps(mutator(doc, rng, i)).encode()
            if rng.random() < 0.1:
                payload = payload[: rng.randrange(1, len(payload))]  # truncated
        elif roll < runs_share + 0.01:
            payload = _oversized(rng, i)
        else:
            payload = simple[i % len(simple)](rng, i)
        if payload not in seen:
            seen.add(payload)
            out.append(payload)
    return out
