"""Layer 3: the DSPy per-call hooks a variable can be bound to, and which types fit each.

Checked when ``bind`` is called (for declared variables and already-registered names) and again
on each call against the record actually in the session, so a wrong pairing never reaches DSPy.
"""

from __future__ import annotations

import difflib
from typing import Any, Final

from dspex._model import VariableSpec
from dspex.errors import BindingError

__all__ = ["HOOKS", "HOOK_KINDS", "LM_KWARGS", "check_fit", "check_hook"]

_NUMBER: Final = frozenset({"number"})
_INTEGER: Final = frozenset({"integer"})
_STRING: Final = frozenset({"string"})
_BOOLEAN: Final = frozenset({"boolean"})
_JSON: Final = frozenset({"json"})
_ANY: Final = frozenset({"number", "integer", "string", "boolean", "json"})

LM_KWARGS: Final[dict[str, frozenset[str]]] = {
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "max_tokens": _INTEGER,
    "max_completion_tokens": _INTEGER,
    "n": _INTEGER,
    "seed": _INTEGER,
    "top_k": _INTEGER,
    "top_logprobs": _INTEGER,
    "rollout_id": _INTEGER,
    "logprobs": _BOOLEAN,
    "stop": _STRING | _JSON,
    "reasoning_effort": _STRING,
    "user": _STRING,
    "service_tier": _STRING,
    "logit_bias": _JSON,
}
"""Common LM keyword arguments (sent through ``config=``) and the value kinds each accepts."""

HOOK_KINDS: Final[dict[str, frozenset[str]]] = {
    "instructions": _STRING,
    "demos": _JSON,
    "lm": _STRING,
}
"""The hooks that are not LM keywords, and the value kinds each accepts."""

HOOKS: Final = tuple(sorted([*HOOK_KINDS, *LM_KWARGS, "config"]))
"""Every name ``bind`` accepts as a keyword."""

_WORDS: Final = {
    "number": "a number (float or integer variable)",
    "integer": "an integer",
    "string": "a string",
    "boolean": "a boolean",
    "json": "a json value",
}


def check_hook(module: Any, hook: str) -> str:
    """Return the kind of ``hook`` (``"config"``, ``"instructions"``, ``"demos"``, ``"lm"``).

    Raises:
        BindingError: DSPy has no such per-call hook.
    """
    if hook in HOOK_KINDS:
        return hook
    if hook in LM_KWARGS:
        return "config"
    close = difflib.get_close_matches(hook, HOOKS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise BindingError(
        f"{type(module).__name__} has no binding hook {hook!r}{hint}; valid hooks: "
        f"{', '.join(HOOKS)}; pass any other LM keyword through config={{{hook!r}: variable}}",
        hook=hook,
        valid=list(HOOKS),
    )


def _value_kinds(value: Any) -> frozenset[str]:
    if isinstance(value, bool):
        return _BOOLEAN
    if isinstance(value, int):
        return _NUMBER | _INTEGER
    if isinstance(value, float):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    return frozenset()


_TYPE_KINDS: Final = {
    "float": _NUMBER,
    "integer": _NUMBER | _INTEGER,
    "string": _STRING,
    "boolean": _BOOLEAN,
    "json": _JSON,
}


def _spec_kinds(spec: VariableSpec) -> frozenset[str]:
    kinds = _TYPE_KINDS.get(spec.type)
    if kinds is not None:
        return kinds
    if spec.type == "choice":
        found = _ANY
        for choice in spec.constraints["choices"]:
            found = found & _value_kinds(choice)
        return found
    return frozenset()  # module, embedding, tensor: no hook takes them


def check_fit(hook: str, kind: str, name: str, spec: VariableSpec) -> None:
    """Check that variable ``name`` with ``spec`` can feed ``hook``.

    Raises:
        BindingError: the variable's type does not fit the hook.
    """
    needed = HOOK_KINDS.get(hook, _ANY) if kind != "config" else LM_KWARGS.get(hook, _ANY)
    if _spec_kinds(spec) & needed:
        return
    needs = " or ".join(_WORDS[k] for k in sorted(needed))
    raise BindingError(
        f"variable {name!r} has type {_describe(spec)}, which does not fit hook {hook!r}: "
        f"{hook} needs {needs}",
        hook=hook,
        name=name,
        type=spec.type,
    )


def _describe(spec: VariableSpec) -> str:
    if spec.type == "choice":
        return f"choice{list(spec.constraints['choices'])!r}"
    return repr(spec.type)
