"""Engines: JSON text for records and updates, as durable engines store them.

Values are decoded by their spec: embeddings come back as tuples and tensors as read-only numpy
arrays (raw little-endian bytes in base64 with dtype and shape; never pickle).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from dspex._model import VariableRecord, VariableSpec, VariableUpdate, freeze

__all__ = [
    "decode_record",
    "decode_update",
    "decode_value",
    "encode_record",
    "encode_update",
    "encode_value",
    "record_dict",
    "record_from_dict",
]


def encode_value(spec: VariableSpec, value: Any) -> Any:
    """JSON-ready form of a canonical value."""
    if spec.type == "tensor":
        array = value.astype(value.dtype.newbyteorder("<"), copy=False)
        return {
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode(),
        }
    if spec.type == "embedding":
        return list(value)
    return value


def decode_value(spec: VariableSpec, data: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    if spec.type == "tensor":
        import numpy as np

        raw = base64.b64decode(data["data"])
        array = np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(data["shape"])
        array = array.astype(array.dtype.newbyteorder("="), copy=True)
        array.flags.writeable = False
        return array
    if spec.type == "embedding":
        return tuple(data)
    if spec.type == "json":
        return freeze(data)  # records are immutable snapshots, as validate() makes them
    return data


def record_dict(record: VariableRecord) -> dict[str, Any]:
    """A record as a JSON-ready dict."""
    return {
        "name": record.name,
        "spec": record.spec.to_json(),
        "value": encode_value(record.spec, record.value),
        "version": record.version,
        "revision": record.revision,
        "updated_at": record.updated_at,
        "writer": record.writer,
        "metadata": dict(record.metadata),
        "stale": record.stale,
        "lock": None if record.lock is None else dict(record.lock),
    }


def record_from_dict(data: dict[str, Any]) -> VariableRecord:
    """Inverse of :func:`record_dict`."""
    spec_data = data["spec"]
    constraints = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in spec_data["constraints"].items()
    }
    spec = VariableSpec(spec_data["type"], constraints)
    return VariableRecord(
        data["name"],
        spec,
        decode_value(spec, data["value"]),
        data["version"],
        data["revision"],
        data["updated_at"],
        data["writer"],
        freeze(data["metadata"]),
        data["stale"],
        None if data["lock"] is None else freeze(data["lock"]),
    )


def encode_record(record: VariableRecord) -> str:
    """A record as JSON text."""
    return json.dumps(record_dict(record), separators=(",", ":"))


def decode_record(text: str | bytes) -> VariableRecord:
    """Inverse of :func:`encode_record`."""
    return record_from_dict(json.loads(text))


def encode_update(update: VariableUpdate) -> str:
    """An update as JSON text."""
    return json.dumps(
        {"revision": update.revision, "kind": update.kind, "record": record_dict(update.record)},
        separators=(",", ":"),
    )


def decode_update(text: str | bytes) -> VariableUpdate:
    """Inverse of :func:`encode_update`."""
    data = json.loads(text)
    record = record_from_dict(data["record"])
    return VariableUpdate(data["revision"], data["kind"], record.name, record)
