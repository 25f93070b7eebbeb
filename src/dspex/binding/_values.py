"""Layer 3: what a binding is, and how a bound call's values are read and converted.

A bind boundary puts one snapshot of its variables into DSPy's context overlay under
``dspex_values``; DSPy copies the overlay into its threads and async tasks. Outside a bound call,
values come from the current session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dspy.dsp.utils.settings import thread_local_overrides

from dspex.binding._state import plain, read_records
from dspex.errors import BindingError, SessionError, VariableNotFoundError
from dspex.session import current_session
from dspex.variables import Variable

__all__ = [
    "UNSET",
    "BOUND_LM_KEY",
    "VALUES_KEY",
    "Binding",
    "Layer",
    "call_values",
    "check_travel",
    "demos_value",
    "instructed",
    "session_value",
    "value_of",
]

VALUES_KEY: Final = "dspex_values"
"""The ``dspy.context`` key holding a bound call's values (variable name -> value)."""

BOUND_LM_KEY: Final = "dspex_lm"
"""The ``dspy.context`` key holding the LM copy a bind boundary made for its call: the ``lm``
it set, with every bound LM keyword of the call applied (see ``_Plan.call_overlay``)."""

UNSET: Final = object()
"""No value: the variable is neither in the bound call nor in a session."""


@dataclass(frozen=True)
class Binding:
    """One hook -> variable pair, checked at bind time (deep-copyable, picklable)."""

    hook: str  # the LM keyword, or "instructions" / "demos" / "lm"
    kind: str  # "config", "instructions", "demos" or "lm"
    name: str  # the variable name in the session
    declared: Variable | None  # the declaration, when a Variable (not a name) was bound

    def __deepcopy__(self, memo: dict[int, Any]) -> Binding:
        return self  # immutable: a copy would be identical (deep copies of modules are hot)

    @property
    def models(self) -> Mapping[str, Any] | None:
        """For an ``lm`` binding of a ``dspex.Choice(key=LM, ...)``: key -> LM object."""
        declared = self.declared
        return getattr(declared.type, "objects", None) if declared is not None else None


def check_travel(bindings: tuple[Binding, ...]) -> None:
    """Check that the LM objects of bound choices can be pickled (saved, sent to workers).

    Called when a module is pickled, so ``dspex.Remote`` and ``save_program=True`` fail up front
    with the choice key and LM named, instead of a worker finding no LM.

    Raises:
        BindingError: an LM of a bound ``dspex.Choice`` cannot be pickled.
    """
    import cloudpickle

    for b in bindings:
        for key, lm in (b.models or {}).items():
            try:
                cloudpickle.dumps(lm)
            except Exception as exc:  # pickling raises many types
                raise BindingError(
                    f"the LM {type(lm).__name__}({getattr(lm, 'model', '?')!r}) of choice "
                    f"{key!r} of variable {b.name!r} cannot be pickled ({type(exc).__name__}: "
                    f"{exc}), so it cannot be saved or sent to worker processes; keep live "
                    "clients out of the LM object or create them lazily",
                    name=b.name,
                    key=key,
                ) from exc


@dataclass(frozen=True)
class Layer:
    """The bindings one ``bind`` call applies to one predictor.

    ``distance`` is how deep the predictor sits below the bound module (0: the predictor itself),
    so the innermost ``bind`` wins per hook; ``suffix`` is the text the predictor's module added
    after the task instructions (ReAct's protocol and tool list).
    """

    distance: int
    bindings: tuple[Binding, ...]
    suffix: str = ""

    def __deepcopy__(self, memo: dict[int, Any]) -> Layer:
        return self  # immutable


# ------------------------------------------------------------------------------------------
# reading a bound value


def call_values() -> Mapping[str, Any] | None:
    """The values of the bound call in progress (None outside every bound call)."""
    values: Mapping[str, Any] | None = thread_local_overrides.get().get(VALUES_KEY)
    return values


def value_of(binding: Binding) -> Any:
    """The binding's value: from the bound call in progress, else from the session."""
    values = call_values()
    if values is not None:
        value = values.get(binding.name, UNSET)
        if value is not UNSET:
            return value
    return session_value(binding)


def session_value(binding: Binding) -> Any:
    """The binding's value in the current session, converted for its hook (``UNSET`` if none).

    While a save reads the variables once (:func:`~dspex.binding._state.one_read`), from that
    read.
    """
    records = read_records()
    if records is not None and binding.name in records:
        record = records[binding.name]
    else:
        try:
            session = current_session()
        except SessionError:
            return UNSET
        try:
            record = session.provider.get_variable(session.session_id, binding.name)
        except VariableNotFoundError:
            record = None
    if record is not None:
        return convert(binding, record.value)
    if binding.declared is None:
        return UNSET
    return convert(binding, binding.declared.default)


def convert(binding: Binding, raw: Any) -> Any:
    """A session value as DSPy wants it for ``binding``'s hook (demos become plain dicts)."""
    if binding.kind == "demos":
        return demos_value(binding.name, raw)
    return raw


def demos_value(name: str, value: Any) -> list[dict[str, Any]]:
    """Check and thaw a demos value: a list of plain dicts.

    Raises:
        BindingError: the value is not a JSON array of objects.
    """
    if not isinstance(value, list | tuple) or not all(isinstance(d, Mapping) for d in value):
        raise BindingError(
            f"variable {name!r} is bound to 'demos' but holds {_json_kind(value)}; demos must "
            "be a JSON array of objects, e.g. [{'question': '...', 'answer': '...'}]",
            name=name,
            hook="demos",
        )
    return [plain(d) for d in value]


def _json_kind(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "an array whose items are not all objects"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def instructed(signature: Any, text: str, suffix: str) -> Any:
    """A new class: ``signature`` with ``text`` as its task instructions, keeping ``suffix``.

    Always a new class, never shared: DSPy code edits a signature class in place
    (``predictor.signature.instructions = ...``, as InferRules does), so each predictor keeps
    its own (see :mod:`dspex.binding._predictor`).
    """
    return signature.with_instructions(text + suffix if text else suffix.lstrip("\n"))
