"""Layer 2, gRPC adapter: ``snakepit.bridge`` values, constraints and records <-> dspex's.

The original bridge sends values as JSON in ``google.protobuf.Any`` (type URL
``type.googleapis.com/snakepit.<type>``), special floats as the strings ``"NaN"``/``"Infinity"``,
tensors as ``{"shape", "data"}`` objects, and large embeddings/tensors as a ``.binary`` Any whose
payload (a pickled list of numbers) travels in a bytes field. Here those become the plain values
dspex validates, and dspex records become the original ``Variable`` message. Incoming values are
read by the variable's declared (or stored) type, never by the Any's URL; pickles are read with
an unpickler that builds lists and numbers only; outgoing values are always JSON.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf import any_pb2, timestamp_pb2

import dspex.errors as errors
from dspex._model import VariableRecord, VariableSpec, make_spec
from dspex._proto.snakepit import snakepit_bridge_pb2 as sp

__all__ = [
    "ID_PREFIX",
    "decode_any",
    "encode_any",
    "spec_from_snakepit",
    "timestamp",
    "variable_message",
]

ID_PREFIX: Final = "var_"
"""Variable ids are ``var_<name>``: one id per name, stable across versions."""
_URL: Final = "type.googleapis.com/snakepit."
_SPECIAL_FLOATS: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_JSON_TYPES: Final = {"map": "json", "list": "json"}
_ANYWHERE: Final = ("[\\s\\S]*(?:", ")[\\s\\S]*")
"""A snakepit pattern matches anywhere in the value; dspex patterns match the whole value."""


class _NumbersOnly(pickle.Unpickler):
    """Reads pickled lists of numbers and refuses every class (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a binary value")


def _binary_numbers(payload: bytes, name: str) -> list[Any]:
    try:
        data = _NumbersOnly(io.BytesIO(payload)).load()
    except Exception as exc:
        raise errors.VariableTypeError(
            f"variable {name!r}: the binary value is not a pickled list of numbers ({exc}); "
            "send the value as JSON instead",
            name=name,
        ) from None
    if not isinstance(data, list):
        raise errors.VariableTypeError(
            f"variable {name!r}: the binary value holds {type(data).__name__}, not a list",
            name=name,
        )
    return data


def decode_any(value: Any, binary: bytes, type_name: str, name: str) -> Any:
    """The plain value of an Any sent for a variable of ``type_name``.

    Raises:
        StoreProtocolError: no value was sent.
        VariableTypeError: the JSON (or binary payload) cannot be read.
    """
    if not value.type_url and not value.value:
        raise errors.StoreProtocolError(f"variable {name!r}: the request carries no value")
    try:
        document = json.loads(value.value) if value.value else None
    except ValueError as exc:
        raise errors.VariableTypeError(
            f"variable {name!r}: the Any value is not JSON ({exc})", name=name
        ) from None
    if value.type_url.endswith(".binary") and binary:
        numbers = _binary_numbers(binary, name)
        shape = document.get("shape") if isinstance(document, dict) else None
        return _from_tensor(numbers, shape, name) if type_name == "tensor" else numbers
    return _coerce(type_name, document, name)


def _coerce(type_name: str, value: Any, name: str) -> Any:
    """The original server's input coercions that dspex's validation does not make."""
    if type_name == "float" and isinstance(value, str) and value in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value]  # then refused: dspex values are finite
    if type_name == "boolean":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if type(value) is int and value in (0, 1):
            return bool(value)
    if type_name == "tensor" and isinstance(value, dict) and {"shape", "data"} <= set(value):
        return _from_tensor(value["data"], value["shape"], name)
    return value


def _from_tensor(data: Any, shape: Any, name: str) -> Any:
    import numpy as np

    try:
        array = np.asarray(data, dtype=float)
        return array.reshape(shape).tolist() if shape is not None else array.tolist()
    except (TypeError, ValueError) as exc:
        raise errors.VariableTypeError(
            f"variable {name!r}: a tensor needs numeric data matching its shape ({exc})",
            name=name,
        ) from None


def encode_any(type_name: str, value: Any) -> Any:
    """The Any the original clients read: JSON, tensors as ``{"shape", "data"}``."""
    if type_name == "tensor":
        value = {"shape": list(value.shape), "data": value.tolist()}
    elif isinstance(value, tuple):
        value = list(value)
    return any_pb2.Any(type_url=_URL + type_name, value=json.dumps(value).encode())


# -- constraints ------------------------------------------------------------------------------


def spec_from_snakepit(type_name: str, constraints: Mapping[str, Any], value: Any) -> VariableSpec:
    """The dspex spec for a snakepit type and constraints (unknown keys are ignored, as the
    original server did).

    Raises:
        ConstraintError: unknown type, or constraints dspex cannot hold (empty choices).
        PatternError: the pattern is not in the portable dialect.
    """
    type_name = _JSON_TYPES.get(type_name, type_name)
    keys: dict[str, Any] = {}
    for key, target in _KEYS.get(type_name, {}).items():
        if constraints.get(key) not in (None, []):
            keys[target] = constraints[key]
    if "pattern" in keys:
        keys["pattern"] = _ANYWHERE[0] + str(keys["pattern"]) + _ANYWHERE[1]
    if type_name == "embedding" and "dimensions" not in keys and isinstance(value, list):
        keys["dimensions"] = len(value)
    return make_spec(type_name, **keys)


_KEYS: Final[dict[str, dict[str, str]]] = {
    "float": {"min": "min", "max": "max"},
    "integer": {"min": "min", "max": "max"},
    "string": {
        "min_length": "min_length",
        "max_length": "max_length",
        "pattern": "pattern",
        "enum": "choices",
    },
    "choice": {"choices": "choices"},
    "module": {"allowed_modules": "choices"},
    "embedding": {"dimensions": "dimensions"},
    "tensor": {"shape": "shape"},
    "json": {"max_length": "max_length"},
}


def _snakepit_constraints(spec: VariableSpec) -> dict[str, Any]:
    """The constraints in the original's key names (the reverse of :func:`spec_from_snakepit`)."""
    reverse = {target: key for key, target in _KEYS.get(spec.type, {}).items()}
    out: dict[str, Any] = {}
    for key, value in spec.to_json()["constraints"].items():
        out[reverse.get(key, key)] = _search_pattern(value) if key == "pattern" else value
    return out


def _search_pattern(pattern: str) -> str:
    """A dspex (whole-value) pattern as a snakepit (search-anywhere) one."""
    if pattern.startswith(_ANYWHERE[0]) and pattern.endswith(_ANYWHERE[1]):
        return pattern[len(_ANYWHERE[0]) : -len(_ANYWHERE[1])]
    return f"^(?:{pattern})$"


# -- records ----------------------------------------------------------------------------------


def timestamp(seconds: float) -> Any:
    """A wall-clock ``Timestamp`` (the original sent Erlang monotonic seconds)."""
    message = timestamp_pb2.Timestamp()
    message.FromNanoseconds(int(seconds * 1e9))
    return message


def _string_map(mapping: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in mapping.items()
    }


def variable_message(record: VariableRecord) -> Any:
    """The original ``Variable`` message for a record (versions count from 0, as there)."""
    metadata = _string_map(record.metadata)
    source = metadata.get("source", "")
    message = sp.Variable(
        id=ID_PREFIX + record.name,
        name=record.name,
        type=record.spec.type,
        value=encode_any(record.spec.type, record.value),
        constraints_json=json.dumps(_snakepit_constraints(record.spec)),
        metadata={**metadata, "writer": record.writer, "revision": str(record.revision)},
        source=sp.Variable.PYTHON if source.lower() == "python" else sp.Variable.ELIXIR,
        last_updated_at=timestamp(record.updated_at),
        version=record.version - 1,
    )
    if record.lock:
        status = message.optimization_status
        status.optimizing = True
        status.optimizer_id = str(record.lock.get("optimizer_id", ""))
        status.started_at.CopyFrom(timestamp(float(record.lock.get("acquired_at", 0.0))))
    return message
