"""Wire: values, specs, records and session summaries <-> messages.

Values travel as JSON text, numpy arrays as typed raw little-endian bytes (dtype, shape, data),
never pickle. Decoding gives the same canonical forms as :func:`dspex._model.validate`
(read-only JSON containers, embeddings as tuples, read-only arrays), so a record read over the
wire equals one read locally.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final

import dspex.errors as errors
from dspex._model import EMPTY, SessionInfo, VariableRecord, VariableSpec, freeze, make_spec
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex._spec import DTYPES, dtype_name
from dspex._validate import json_default, plain_detail

__all__ = [
    "decode_value",
    "encode_value",
    "json_object",
    "mapping_json",
    "record_from_proto",
    "record_to_proto",
    "records_from_proto",
    "session_from_proto",
    "session_to_proto",
    "spec_from_json",
    "spec_to_json",
]

_NUMERIC_KINDS: Final = "biufc"
_LEGACY_ORDERS: Final = "<|"
"""numpy's little-endian type strings ("<f8", "|u1"), still accepted from older clients."""
_CACHE_LIMIT: Final = 4096
_new_tuple: Any = tuple.__new__

# -- values -------------------------------------------------------------------------------


def _numpy_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


_DECODER: Final = json.JSONDecoder()


def json_text(value: Any, name: str = "?") -> str:
    """JSON text for a value (a fast path for plain numbers, same text as ``json.dumps``).

    Raises:
        VariableTypeError: the value cannot be written as JSON.
    """
    cls = value.__class__
    if cls is float and value - value == 0.0:  # finite: repr is already valid JSON
        return float.__repr__(value)
    if cls is int:
        return int.__repr__(value)
    try:
        return json.dumps(value, default=json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise errors.VariableTypeError(
            f"variable {name!r}: a value of type {type(value).__name__} cannot be sent to the "
            f"session store ({exc}); use JSON-compatible values or numeric numpy arrays",
            name=name,
            value=plain_detail(value),  # the detail a local provider's type error carries
        ) from exc


def encode_value(value: Any, name: str = "?") -> Any:
    """Return a ``Value`` message for ``value``.

    Raises:
        VariableTypeError: the value can travel neither as JSON nor as a numeric array.
    """
    if _numpy_array(value) and value.dtype.kind in _NUMERIC_KINDS:
        return pb.Value(array=_encode_array(value))
    return pb.Value(json=json_text(value, name))


def parse_json(text: str) -> Any:
    """Parse one JSON document (``raw_decode`` plus an end check: cheaper than ``json.loads``).

    Raises:
        ValueError: not a single valid JSON document.
    """
    value, end = _DECODER.raw_decode(text)
    if end != len(text) and text[end:].strip():
        raise ValueError(f"extra data after the JSON value at position {end}")
    return value


def _encode_array(value: Any) -> Any:
    array = value  # tobytes() writes C order whatever the layout (and keeps 0-d arrays 0-d)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return pb.Array(dtype=dtype_name(array.dtype), shape=array.shape, data=array.tobytes())


def decode_value(message: Any, name: str, max_bytes: int | None = None) -> Any:
    """Return the plain value of a ``Value`` message (server side: before validation).

    Raises:
        StoreProtocolError: no value was given.
        LimitExceededError: the value is larger than ``max_bytes``.
        VariableValueError: invalid JSON, or array bytes that disagree with shape and dtype.
    """
    kind = message.WhichOneof("kind")
    if kind == "json":
        text = message.json
        _check_size(name, len(text), max_bytes)
        try:
            return parse_json(text)
        except (ValueError, RecursionError) as exc:
            raise errors.VariableValueError(
                f"variable {name!r}: the value is not valid JSON ({exc}); send JSON text",
                name=name,
            ) from exc
    if kind == "array":
        _check_size(name, len(message.array.data), max_bytes)
        return _decode_array(message.array, name)
    raise errors.StoreProtocolError(
        f"malformed request: variable {name!r} has no value (neither json nor array)", name=name
    )


def _check_size(name: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise errors.LimitExceededError(
            f"variable {name!r}: value of {size} bytes exceeds the store's limit of "
            f"{max_bytes} bytes; store a smaller value or raise the server's limit "
            "(dspex serve --max-value-bytes)",
            name=name,
            size=size,
            limit=max_bytes,
        )


def _decode_array(message: Any, name: str) -> Any:
    import numpy as np

    try:
        dtype = np.dtype(message.dtype).newbyteorder("<")  # the wire is little-endian
    except (TypeError, ValueError) as exc:
        raise errors.VariableValueError(
            f"variable {name!r}: array dtype {message.dtype!r} is not a numpy dtype; use one "
            f"of {', '.join(DTYPES)}",
            name=name,
        ) from exc
    if message.dtype not in DTYPES and message.dtype[:1] not in _LEGACY_ORDERS:
        raise errors.VariableValueError(
            f"variable {name!r}: array dtype {message.dtype!r} is not a canonical dtype name; "
            f"use one of {', '.join(DTYPES)}",
            name=name,
        )
    shape = tuple(message.shape)
    if dtype.kind not in _NUMERIC_KINDS or any(d < 0 for d in shape):
        raise errors.VariableValueError(
            f"variable {name!r}: array dtype {message.dtype!r} / shape {list(shape)} is not a "
            "numeric array (dtype kinds b, i, u, f, c and non-negative dimensions)",
            name=name,
        )
    expected = math.prod(shape) * dtype.itemsize
    if len(message.data) != expected:
        raise errors.VariableValueError(
            f"variable {name!r}: array data is {len(message.data)} bytes but shape "
            f"{list(shape)} and dtype {dtype.str} need {expected} bytes",
            name=name,
        )
    try:
        array = np.frombuffer(message.data, dtype=dtype).reshape(shape)
    except ValueError as exc:  # e.g. a zero-size shape with a dimension numpy cannot hold
        raise errors.VariableValueError(
            f"variable {name!r}: array shape {list(shape)} is not a usable numpy shape ({exc})",
            name=name,
        ) from exc
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
        array.flags.writeable = False
        array = array.view()
    return array


def _parse_canonical(type_name: str, text: str) -> Any:
    """Parse a stored value into the form :func:`dspex._model.validate` gives its type."""
    value = parse_json(text)
    if type_name == "json":
        return freeze(value)
    if type_name == "embedding" and isinstance(value, list):
        return tuple(value)
    return value


_PARSERS: Final[dict[str, Any]] = {
    "float": lambda _type, text: float(text),  # stored floats are finite reprs
    "integer": lambda _type, text: int(text),
}
"""Parsers for the types whose stored JSON text is exactly a Python literal."""


# -- specs and records --------------------------------------------------------------------

_spec_json_cache: dict[int, tuple[VariableSpec, str]] = {}
_spec_cache: dict[tuple[str, str], VariableSpec] = {}


def spec_to_json(spec: VariableSpec) -> str:
    """The constraints of ``spec`` as JSON text (cached per spec object)."""
    cached = _spec_json_cache.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    text = json.dumps(spec.to_json()["constraints"], sort_keys=True)
    if len(_spec_json_cache) >= _CACHE_LIMIT:
        _spec_json_cache.clear()
    _spec_json_cache[id(spec)] = (spec, text)
    return text


def spec_from_json(type_name: str, constraints_json: str) -> VariableSpec:
    """Rebuild and check a spec from its wire form (cached per distinct text).

    Raises:
        ConstraintError: unknown type, bad constraints or constraints that are not a JSON object.
    """
    key = (type_name, constraints_json)
    spec = _spec_cache.get(key)
    if spec is None:
        constraints = json_object(constraints_json, "constraints_json", errors.ConstraintError)
        spec = make_spec(type_name, **constraints)
        if len(_spec_cache) >= _CACHE_LIMIT:
            _spec_cache.clear()
        _spec_cache[key] = spec
    return spec


def json_object(text: str, what: str, error: type[errors.DspexError]) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON ({exc}); send a JSON object") from exc
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def mapping_json(mapping: Mapping[str, Any] | None) -> str:
    return json.dumps(mapping, default=json_default) if mapping else ""


def record_to_proto(record: VariableRecord) -> Any:
    """Return the ``Variable`` message for a record."""
    message = pb.Variable(
        name=record.name,
        type=record.spec.type,
        constraints_json=spec_to_json(record.spec),
        version=record.version,
        revision=record.revision,
        updated_at=record.updated_at,
        writer=record.writer,
    )
    value = record.value
    if _numpy_array(value):
        message.value.array.CopyFrom(_encode_array(value))
    else:
        message.value.json = json_text(value, record.name)
    if record.metadata:
        message.metadata_json = mapping_json(record.metadata)
    if record.stale:
        message.stale = True
    if record.lock:
        message.lock_json = mapping_json(record.lock)
    return message


def record_from_proto(message: Any) -> VariableRecord:
    """Return the immutable record a ``Variable`` message describes."""
    spec = spec_from_json(message.type, message.constraints_json)
    value = message.value
    if value.WhichOneof("kind") == "json":
        plain = _PARSERS.get(spec.type, _parse_canonical)(spec.type, value.json)
    else:
        plain = decode_value(value, message.name)
    metadata, lock = message.metadata_json, message.lock_json
    record: VariableRecord = _new_tuple(VariableRecord, (
        message.name, spec, plain, message.version, message.revision, message.updated_at,
        message.writer, freeze(json.loads(metadata)) if metadata else EMPTY, message.stale,
        freeze(json.loads(lock)) if lock else None,
    ))  # fmt: skip
    return record


def records_from_proto(messages: Iterable[Any]) -> list[VariableRecord]:
    """Records of a repeated ``Variable`` field, in order."""
    return [record_from_proto(m) for m in messages]


def session_to_proto(info: SessionInfo) -> Any:
    message = pb.SessionInfo(
        session_id=info.session_id,
        created_at=info.created_at,
        revision=info.revision,
        variable_count=info.variable_count,
        last_heartbeat=info.last_heartbeat,
    )
    if info.ttl is not None:
        message.ttl = info.ttl
    if info.owner:
        message.owner = info.owner
    return message


def session_from_proto(message: Any) -> SessionInfo:
    return SessionInfo(
        message.session_id,
        message.created_at,
        message.revision,
        message.variable_count,
        message.last_heartbeat,
        message.ttl if message.HasField("ttl") else None,
        message.owner,
    )
