"""Layer 3: the hooked classes ``bind`` switches modules to (same name, same base class).

A hooked class is ``type(base.__name__, (*mixins, base), ...)``, cached per (base class, kinds):
``"predictor"`` (per-call attribute hooks) and ``"boundary"`` (the bind boundary's call). It
pickles and deep-copies as "the hooked class of ``base``", so copies and loaded programs keep
their hooks.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

__all__ = ["Hooked", "add_kind", "class_for", "own_dict", "register_mixin", "restore"]


def own_dict(obj: Any) -> dict[str, Any]:
    """``obj.__dict__``, read past the class's ``__getattribute__``.

    ``dspy.Module`` overrides ``__getattribute__`` in Python (to warn about direct ``forward``
    calls), so every attribute read on a module, ``module.__dict__`` included, is a Python
    call; the hooks read a predictor's state several times per bound call, so they read the
    instance dict this way (about 10 us less per bound Predict call).
    """
    d: dict[str, Any] = object.__getattribute__(obj, "__dict__")
    return d


class Hooked:
    """Base of the hook mixins: pickles and deep-copies as the hooked class of the base class.

    A deep copy copies the module's own state only; a pickle (``save_program=True``,
    ``dspex.Remote``, cloudpickle) goes through ``__getstate__``, where bound modules add the
    values of their variables (see ``BoundModule.__getstate__``).
    """

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        cls = type(self)
        return (restore, (cls.__dspex_base__, cls.__dspex_kinds__), self.__getstate__())  # type: ignore[attr-defined]

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        cls = type(self)
        new = restore(cls.__dspex_base__, cls.__dspex_kinds__)  # type: ignore[attr-defined]
        memo[id(self)] = new
        state = dict(self.__dict__)
        for key in ("history", "callbacks", "_dspex_pending", "_dspex_config_view"):
            state.pop(key, None)
        new.__dict__.update(copy.deepcopy(state, memo))
        new.__dict__.setdefault("history", [])
        new.__dict__.setdefault("callbacks", [])
        return new


_classes: dict[tuple[type, frozenset[str]], type] = {}
_classes_lock = threading.Lock()
_MIXINS: dict[str, type] = {}


def register_mixin(kind: str, mixin: type) -> None:
    """Register the mixin of a hook kind (``_predictor`` and ``_bound`` register theirs)."""
    _MIXINS[kind] = mixin


def class_for(base: type, kinds: frozenset[str]) -> type:
    """The subclass of ``base`` with the mixins of ``kinds`` (cached; same name as ``base``)."""
    key = (base, kinds)
    cls = _classes.get(key)
    if cls is None:
        with _classes_lock:
            cls = _classes.get(key)
            if cls is None:
                mixins = tuple(_MIXINS[k] for k in ("boundary", "predictor") if k in kinds)
                cls = type(
                    base.__name__,
                    (*mixins, base),
                    {
                        "__module__": base.__module__,
                        "__qualname__": base.__qualname__,
                        "__dspex_base__": base,
                        "__dspex_kinds__": kinds,
                    },
                )
                _classes[key] = cls
    return cls


def restore(base: type, kinds: frozenset[str]) -> Any:
    """Unpickling and deepcopy: a blank instance of the hooked class (state set after)."""
    return object.__new__(class_for(base, kinds))


def add_kind(module: Any, kind: str) -> None:
    """Switch ``module`` to the hooked class that also has ``kind``."""
    cls = type(module)
    base = getattr(cls, "__dspex_base__", cls)
    kinds = frozenset(getattr(cls, "__dspex_kinds__", frozenset()) | {kind})
    if kinds != getattr(cls, "__dspex_kinds__", None):
        module.__class__ = class_for(base, kinds)
