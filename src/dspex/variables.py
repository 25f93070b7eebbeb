"""Layer 3: dspex.Variable, a frozen declaration of a tunable that resolves in the session."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex._model import FrozenDict, VariableRecord, VariableSpec, make_spec, validate
from dspex.errors import VariableAssignmentError
from dspex.session import current_session

__all__ = ["Variable"]


@dataclass(frozen=True, eq=False)
class Variable:
    """A declared, typed tunable: its name, type, default and constraints (no live state).

    Declare it as a class attribute of a :class:`dspex.Program`; the name is taken from the
    attribute. It holds no channel or lock and is deeply immutable, so ``deepcopy`` (which
    returns the same object), ``save``/``load``, pickle and cloudpickle work. Values live in
    the current session.

    Args:
        type: ``float``, ``int``, ``str``, ``bool``, ``dspex.Choice(...)``, a type name
            (``"module"``, ``"embedding"``, ``"tensor"``, ``"json"``), ``dict`` or ``list``.
        default: the value registered when the variable is first seen in a session.
        name: explicit name (otherwise the attribute name).
        description: free text kept in the record's metadata.
        **constraints: ``min``, ``max``, ``min_length``, ``max_length``, ``pattern``,
            ``choices``, ``dimensions``, ``shape``, ``dtype``.

    Raises:
        ConstraintError: the type or constraints are invalid.
        PatternError: ``pattern`` is not a valid regular expression.
        VariableTypeError: ``default`` has the wrong type.
        VariableValueError: ``default`` breaks the constraints.

    Examples:
        >>> import dspex
        >>> temperature = dspex.Variable(float, 0.7, name="temperature", min=0.0, max=2.0)
        >>> temperature.spec.type
        'float'
    """

    type: Any
    default: Any
    name: str = ""
    description: str = ""
    constraints: Mapping[str, Any] = field(default_factory=FrozenDict)

    def __init__(
        self, type: Any, default: Any, *, name: str = "", description: str = "", **constraints: Any
    ) -> None:
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "constraints", FrozenDict(constraints))
        object.__setattr__(self, "default", validate(self.spec, default, name or "<default>"))

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:
            object.__setattr__(self, "name", name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Variable):
            return NotImplemented
        return (
            self.name == other.name
            and self.description == other.description
            and self.spec == other.spec
            and _same_value(self.default, other.default)
        )

    def __hash__(self) -> int:
        return hash((self.name, repr(self.type)))

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild through __init__ so the default is re-validated into its immutable form.
        return (
            _rebuild,
            (self.type, self.default, self.name, self.description, dict(self.constraints)),
        )

    def __copy__(self) -> Variable:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Variable:
        return self  # deeply immutable, like a tuple of immutables: a copy would be identical

    def assignment_error(
        self, owner: type, attribute: str, statement: str
    ) -> VariableAssignmentError:
        """The error for ``statement`` (an assignment or ``del`` of ``owner().attribute``).

        A declared variable's value lives in the session, shared by every program there, so a
        program instance refuses to shadow it; the message says how to set it instead.
        """
        cls = owner.__name__
        return VariableAssignmentError(
            f"{statement}: {cls}.{attribute} is a session variable ({self.name!r}) shared by "
            "every program in the session, so it cannot be assigned or deleted on one "
            f"instance; set it in the session instead: session.set({self.name!r}, value) or "
            f"{cls}.{attribute}.set(value) inside the session",
            attribute=attribute,
            name=self.name,
        )

    def conflict_with(self, other: Variable) -> str | None:
        """How ``other``, a declaration of the same name, differs: spec or default (else None).

        Two declarations of one name in one session share one value, so they must agree on
        what it is; the description is free text and may differ.
        """
        if self.spec != other.spec:
            return f"type {_describe_spec(self.spec)} vs {_describe_spec(other.spec)}"
        if not _same_value(self.default, other.default):
            return f"default {self.default!r} vs {other.default!r}"
        return None

    @property
    def spec(self) -> VariableSpec:
        """The validated spec (type name plus constraints)."""
        return make_spec(self.type, **self.constraints)

    def register(self) -> VariableRecord:
        """Register in the current session (keeps an existing value)."""
        metadata = {"description": self.description} if self.description else None
        session = current_session()
        return session.provider.register_variable(
            session.session_id, self.name, self.spec, self.default, metadata=metadata
        )

    def get(self) -> Any:
        """The current value in the current session."""
        return current_session().get(self.name)

    def set(self, value: Any, *, expected_version: int | None = None) -> VariableRecord:
        """Set the value in the current session."""
        return current_session().set(self.name, value, expected_version=expected_version)


def _rebuild(
    type_: Any, default: Any, name: str, description: str, constraints: dict[str, Any]
) -> Variable:
    return Variable(type_, default, name=name, description=description, **constraints)


def _describe_spec(spec: VariableSpec) -> str:
    rules = ", ".join(f"{key}={value!r}" for key, value in spec.constraints.items())
    return f"{spec.type}({rules})" if rules else spec.type


def _same_value(left: Any, right: Any) -> bool:
    # numpy arrays compare element-wise; compare tensors by dtype, shape and bytes instead.
    if hasattr(left, "tobytes") or hasattr(right, "tobytes"):
        return (
            getattr(left, "dtype", None) == getattr(right, "dtype", None)
            and getattr(left, "shape", None) == getattr(right, "shape", None)
            and left.tobytes() == right.tobytes()
        )
    return bool(left == right)
