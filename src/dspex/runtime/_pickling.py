"""Layer 1 runtime: cloudpickle with explanations.

When an object cannot be pickled, the bare pickling error ("cannot pickle '_thread.lock' object")
does not say *where* the lock is. :func:`explain_unpicklable` walks the object (attributes,
closure cells, container items, partial arguments, bound-method owners) and names the first
sub-object that fails, e.g. ``setup.<closure module>.lm._lock``. Used by the pool for the setup
target and call payloads, and by the worker for results.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from typing import Any

import cloudpickle

_MAX_DEPTH = 8
_MAX_CHILDREN = 200


def describe(obj: object, limit: int = 80) -> str:
    """Return a short, single-line description of ``obj`` for error messages."""
    try:
        text = repr(obj)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(obj).__qualname__} object>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dumps(obj: object) -> bytes:
    """Pickle ``obj`` with cloudpickle (by value for functions and classes not importable)."""
    return cloudpickle.dumps(obj)  # type: ignore[no-any-return]


def loads(data: bytes) -> Any:
    """Unpickle bytes made by :func:`dumps`."""
    return cloudpickle.loads(data)


def explain_unpicklable(obj: object, name: str) -> str:
    """Say why ``obj`` (called ``name`` in the message) cannot be pickled.

    Returns:
        A sentence naming the innermost failing sub-object path, its type and the pickling
        error, e.g. ``"setup.<closure module>.lock (_thread.lock): TypeError: cannot pickle
        '_thread.lock' object"``. Returns an empty string if ``obj`` pickles after all.
    """
    error = _pickle_error(obj)
    if error is None:
        return ""
    path, culprit, culprit_error = _find_culprit(obj, name, error, 0, set())
    kind = f"{type(culprit).__module__}.{type(culprit).__qualname__}"
    return f"{path} ({kind}): {type(culprit_error).__name__}: {culprit_error}"


def _pickle_error(obj: object) -> BaseException | None:
    try:
        cloudpickle.dumps(obj)
    except Exception as exc:  # pickling raises many types (TypeError, PicklingError, ...)
        return exc
    return None


def _find_culprit(
    obj: object, path: str, error: BaseException, depth: int, seen: set[int]
) -> tuple[str, object, BaseException]:
    """Descend into the first child that fails to pickle; stop where no child fails."""
    seen.add(id(obj))
    if depth >= _MAX_DEPTH:
        return path, obj, error
    for child_path, child in _children(obj, path):
        if id(child) in seen:
            continue
        child_error = _pickle_error(child)
        if child_error is not None:
            return _find_culprit(child, child_path, child_error, depth + 1, seen)
    return path, obj, error


def _children(obj: object, path: str) -> Iterator[tuple[str, object]]:
    """Yield ``(path, child)`` for the parts pickle would serialize (bounded)."""
    items: Iterator[tuple[str, object]]
    if isinstance(obj, dict):
        items = ((f"{path}[{key!r}]", value) for key, value in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = ((f"{path}[{index}]", value) for index, value in enumerate(obj))
    elif isinstance(obj, functools.partial):
        items = _partial_children(obj, path)
    elif isinstance(obj, types.MethodType):
        items = iter([(f"{path}.__self__", obj.__self__)])
    elif isinstance(obj, types.FunctionType):
        items = _function_children(obj, path)
    else:
        state = _pickled_state(obj)
        items = iter(()) if state is None else _attribute_children(state, path)
    for count, item in enumerate(items):
        if count >= _MAX_CHILDREN:
            return
        yield item


def _pickled_state(obj: object) -> dict[str, object] | None:
    """The attributes pickle would serialize: ``__getstate__()`` (which may drop live parts,
    as ``dspy.LM`` drops its lock), else ``__dict__``."""
    state: object = getattr(obj, "__dict__", None)
    getstate = getattr(obj, "__getstate__", None)
    if callable(getstate):
        try:
            state = getstate()
        except Exception:  # a failing __getstate__: fall back to the plain attributes
            pass
    if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ values)
        state = state[0]
    return state if isinstance(state, dict) else None


def _attribute_children(state: dict[str, object], path: str) -> Iterator[tuple[str, object]]:
    for key, value in state.items():
        yield f"{path}.{key}", value


def _partial_children(obj: functools.partial[Any], path: str) -> Iterator[tuple[str, object]]:
    yield f"{path}.func", obj.func
    for index, arg in enumerate(obj.args):
        yield f"{path}.args[{index}]", arg
    for key, value in obj.keywords.items():
        yield f"{path}.keywords[{key!r}]", value


def _function_children(obj: types.FunctionType, path: str) -> Iterator[tuple[str, object]]:
    cells = obj.__closure__ or ()
    for var, cell in zip(obj.__code__.co_freevars, cells, strict=False):
        try:
            yield f"{path}.<closure {var}>", cell.cell_contents
        except ValueError:  # empty cell
            continue
    for index, default in enumerate(obj.__defaults__ or ()):
        yield f"{path}.<default {index}>", default
    for key, value in (obj.__kwdefaults__ or {}).items():
        yield f"{path}.<default {key}>", value
    for global_name in obj.__code__.co_names:
        if global_name in obj.__globals__:
            yield f"{path}.<global {global_name}>", obj.__globals__[global_name]
