"""Seeded random requests for the robustness test: raw bytes and randomly filled messages.

Every RPC of the store is listed from the proto descriptor, so a new RPC is fuzzed without
changing this file. Messages are filled field by field from their descriptors with values that
are sometimes right (known session ids and variable names, valid JSON, real types), sometimes
wrong (random strings, garbage JSON, extreme numbers, huge text), so calls reach deep into the
server as well as fail early.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from dspex._proto.bridge.v1 import store_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["SessionStore"]
METHODS: list[tuple[str, bool, Any]] = [
    (m.name, m.server_streaming, getattr(pb, m.input_type.name)) for m in SERVICE.methods
]
"""(name, server_streaming, request class) of every RPC."""

NAMES = ["a", "b", "t", "text", "arr", "doc", "", "x" * 300, "\u00e9\u4e2d", "a*", "../etc"]
TYPES = ["float", "integer", "string", "boolean", "choice", "json", "tensor", "embedding", "nope"]
POLICIES = ["fail", "wait", "preempt", "", "shove"]
CONSTRAINT_KEYS = ["min", "max", "choices", "pattern", "dimensions", "shape", "dtype", "bogus"]


class RandomRequests:
    """Random request bytes and messages from one seeded generator."""

    def __init__(self, seed: int, session_ids: list[str], huge_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.session_ids = session_ids
        self.huge_bytes = huge_bytes

    def raw_bytes(self) -> bytes:
        """Random bytes: usually short, sometimes a valid-looking prefix, rarely huge."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.02:
            return rng.randbytes(self.huge_bytes)
        if roll < 0.3:
            return rng.randbytes(rng.randint(0, 16))
        return rng.randbytes(rng.randint(0, 2048))

    def message(self, cls: Any, depth: int = 0) -> Any:
        """A ``cls`` message with randomly chosen fields set to random values."""
        message = cls()
        for field in cls.DESCRIPTOR.fields:
            if self.rng.random() < 0.25:
                continue
            if field.is_repeated:
                for _ in range(self.rng.randint(0, 3)):
                    self._append(message, field, depth)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth < 3:
                    getattr(message, field.name).CopyFrom(
                        self.message(getattr(pb, field.message_type.name), depth + 1)
                    )
            else:
                setattr(message, field.name, self._scalar(field))
        return message

    def _append(self, message: Any, field: Any, depth: int) -> None:
        container = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < 3:
                container.add().CopyFrom(
                    self.message(getattr(pb, field.message_type.name), depth + 1)
                )
        else:
            container.append(self._scalar(field))

    def _scalar(self, field: Any) -> Any:
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self._string(field.name)
        if kind == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return self.rng.choice(
                [0.0, -1.0, 0.05, 0.5, 5.0, 1e308, -1e-308, math.inf, math.nan, 30.0]
            )
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.rng.randbytes(self.rng.choice([0, 1, 7, 8, 16, 24, 100]))
        return self.rng.choice([0, 1, 2, 3, -1, 100, 2**62, -(2**63)])  # integers

    def _string(self, name: str) -> str:
        rng = self.rng
        if rng.random() < 0.1:
            return rng.choice(
                ["", "\x00", "\ud7ff" * 3, "x" * rng.randint(1, 5000), "y" * 100_000]
            )
        if name == "session_id":
            return rng.choice([*self.session_ids, *self.session_ids, "nope", ""])
        if name in ("name", "upstream", "downstream", "names", "pattern"):
            return rng.choice(NAMES)
        if name == "type":
            return rng.choice(TYPES)
        if name == "policy":
            return rng.choice(POLICIES)
        if name == "dtype":
            return rng.choice(["<f8", "<i4", "|u1", "|O", "nonsense", ">f4"])
        if name.endswith("_json") or name == "json":
            return self._json_text(name)
        return "".join(rng.choice("abcdef0123456789-_ ") for _ in range(rng.randint(0, 40)))

    def _json_text(self, name: str) -> str:
        rng = self.rng
        if rng.random() < 0.3:
            return rng.choice(["{", "[1,", "nul", '{"a":}', "1e999", "NaN", '"\\ud800"', "{}"])
        if name == "constraints_json":
            keys = rng.sample(CONSTRAINT_KEYS, rng.randint(0, 3))
            return json.dumps({k: self._json_value(2) for k in keys})
        return json.dumps(self._json_value(3))

    def _json_value(self, depth: int) -> Any:
        rng = self.rng
        choice = rng.randint(0, 6 if depth > 0 else 4)
        if choice == 0:
            return rng.uniform(-3, 3)
        if choice == 1:
            return rng.randint(-(2**40), 2**40)
        if choice == 2:
            return rng.choice(["", "short", "x" * rng.randint(0, 300)])
        if choice == 3:
            return rng.random() < 0.5
        if choice == 4:
            return None
        if choice == 5:
            return [self._json_value(depth - 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(NAMES): self._json_value(depth - 1) for _ in range(rng.randint(0, 3))}
