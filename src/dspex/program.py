"""Layer 3: dspex.Program, a ``dspy.Module`` whose declared Variables live in the session.

Declare variables as class attributes and bind them onto DSPy modules in ``__init__``::

    class Support(dspex.Program):
        temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0)

        def __init__(self):
            super().__init__()
            self.answer = dspex.bind(dspy.Predict("question -> answer"),
                                     temperature=Support.temperature)

A Program registers its declared variables in the current session when it is built inside one,
and otherwise on its first call inside a session (registration is idempotent and keeps existing
values). ``save``/``load`` also keep the variables' specs and values, which DSPy alone drops.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import dspy

from dspex._model import VariableRecord
from dspex.binding import (
    SECTION,
    SavedVariables,
    bound_variables,
    dump_variables,
    loading,
    one_read,
    prepare_load,
)
from dspex.errors import SessionError, VariableExistsError
from dspex.session import current_session
from dspex.variables import Variable

__all__ = ["Program"]

# Which Program classes have registered their declarations in which session (weak: sessions
# come and go). Registration is idempotent; this only keeps the per-call cost to one lookup.
_registered: weakref.WeakKeyDictionary[Any, set[type]] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def _declared(cls: type) -> Iterator[tuple[str, Variable]]:
    """(attribute, declaration) of ``cls`` and its bases, bases first."""
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, Variable):
                yield attr, value


def _declarations(cls: type) -> dict[str, Variable]:
    found: dict[str, Variable] = {}
    for attr, value in _declared(cls):
        name = value.name or attr
        other = found.get(name)
        if other is not None and other.spec != value.spec:
            raise VariableExistsError(
                f"{cls.__name__} declares variable {name!r} twice with different specs "
                f"({other.spec.to_json()} and {value.spec.to_json()}); rename one",
                name=name,
            )
        found[name] = value
    return found


class Program(SavedVariables, dspy.Module):  # type: ignore[misc]
    """A DSPy module with declared, session-scoped variables.

    Subclass it, declare :class:`dspex.Variable` class attributes, and bind them to DSPy hooks
    with :func:`dspex.bind`. Call it like any ``dspy.Module`` inside ``with dspex.Session():``.

    Args:
        callbacks: DSPy callbacks, as for ``dspy.Module``.

    Examples:
        >>> import dspy, dspex
        >>> class Support(dspex.Program):
        ...     temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0)
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.answer = dspex.bind(dspy.Predict("question -> answer"),
        ...                                  temperature=Support.temperature)
        ...     def forward(self, question):
        ...         return self.answer(question=question)
        >>> with dspex.Session() as session:
        ...     program = Support()
        ...     session.get("temperature")
        0.7
    """

    declared_variables: ClassVar[dict[str, Variable]] = {}
    """Name -> declaration, collected from the class and its bases when the class is made."""

    _declared_attributes: ClassVar[dict[str, Variable]] = {}
    """Attribute name -> declaration, for the assignment check."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.declared_variables = _declarations(cls)
        cls._declared_attributes = dict(_declared(cls))

    def __setattr__(self, name: str, value: Any) -> None:
        """Set an attribute; a declared variable's name is refused (its value is the session's).

        Raises:
            VariableAssignmentError: ``name`` is a declared variable.
        """
        declared = type(self)._declared_attributes.get(name)
        if declared is not None:
            raise declared.assignment_error(type(self), name, f"program.{name} = {value!r}")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        """Delete an attribute; a declared variable cannot be deleted from an instance."""
        declared = type(self)._declared_attributes.get(name)
        if declared is not None:
            raise declared.assignment_error(type(self), name, f"del program.{name}")
        super().__delattr__(name)

    def __init__(self, callbacks: list[Any] | None = None) -> None:
        super().__init__(callbacks=callbacks)
        try:
            session = current_session()
        except SessionError:
            return  # built outside a session: registered on the first call inside one
        self._register_declared(session)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._ensure_registered()
        return super().__call__(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Async call (``await program.acall(...)``), registering variables first if needed."""
        self._ensure_registered()
        return await super().acall(*args, **kwargs)

    def named_variables(self) -> list[tuple[str, Variable | None]]:
        """Declared variables, then variables bound in sub-modules (name, declaration or None).

        A variable bound by name only (``bind(m, temperature="temperature")``) has no
        declaration; its spec lives in the session.
        """
        found: dict[str, Variable | None] = dict(type(self).declared_variables)
        for name, declared in bound_variables(self):
            if found.get(name) is None:
                found[name] = declared
        return list(found.items())

    def register_variables(self) -> list[VariableRecord]:
        """Register every declared and bound declaration in the current session.

        Idempotent: a variable that already exists keeps its value.

        Raises:
            SessionError: no session is active.
            VariableExistsError: a variable exists in the session with a different spec.
        """
        current_session()
        return [v.register() for _, v in self.named_variables() if v is not None]

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """DSPy's state plus the ``dspex_variables`` section (specs and current values), all
        from one read of the variables (see :func:`dspex.binding.one_read`)."""
        named = self.named_variables()
        with one_read(name for name, _ in named):
            state: dict[str, Any] = super().dump_state(json_mode=json_mode)
            state[SECTION] = dump_variables(named)
        return state

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> Any:
        """Load DSPy's state, then set the saved variables in the current session.

        The variables of the top-level section and of every bound predictor's state are checked
        before anything is applied and set in one atomic batch; a bad section changes nothing.

        Raises:
            SessionError: the state has variables and no session is active.
            VariableExistsError: a saved spec conflicts with a declaration or the session.
        """
        state = dict(state)
        own: dict[str, Any] = dict(state.pop(SECTION, None) or {})
        section: dict[str, Any] = {}
        for name, entry in list(state.items()):
            if isinstance(entry, dict) and SECTION in entry:
                stripped = dict(entry)
                section.update(stripped.pop(SECTION) or {})
                state[name] = stripped
        section.update(own)  # the program's own section wins over its predictors' copies
        declared = {name: v for name, v in self.named_variables() if v is not None}
        commit = prepare_load(section, declared) if section else None
        with loading(section):
            super().load_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        if commit is not None:
            commit()
        return self

    def _ensure_registered(self) -> None:
        try:
            session = current_session()
        except SessionError:
            return  # the bound calls inside will say that no session is active
        if "_dspex_pending" in self.__dict__:
            self.apply_pending()
        done = _registered.get(session)
        if done is None or type(self) not in done:
            self._register_declared(session)

    def _register_declared(self, session: Any) -> None:
        """Register this class's declarations in ``session``, after checking that no other
        Program class registered there declares one of the names differently.

        Raises:
            VariableExistsError: another class declares a name with another spec or default.
        """
        cls = type(self)
        with _registered_lock:  # check and claim at once: two clashing classes never both pass
            classes = _registered.setdefault(session, set())
            for other in classes - {cls}:
                clash = _clash(cls, other)
                if clash is not None:
                    raise clash
            claimed = cls not in classes
            classes.add(cls)
        try:
            for variable in cls.declared_variables.values():
                variable.register()
        except BaseException:
            if claimed:
                with _registered_lock:
                    classes.discard(cls)
            raise


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _clash(cls: type[Program], other: type[Program]) -> VariableExistsError | None:
    """The error for a variable that ``cls`` and ``other`` declare differently, if any."""
    for name, mine in cls.declared_variables.items():
        theirs = other.declared_variables.get(name)
        difference = None if theirs is None else theirs.conflict_with(mine)
        if difference is None:
            continue
        first, second = _qualified(other), _qualified(cls)
        redefined = " (the class was defined again, e.g. a re-run cell)" if first == second else ""
        return VariableExistsError(
            f"variable {name!r} is declared by both {first} and {second}{redefined}, with "
            f"{difference}; in one session both use one variable, so {cls.__name__} would not "
            f"get its own declaration but {other.__name__}'s. Rename one (dspex.Variable(..., "
            "name='...')) or declare it once in a common base class.",
            name=name,
            classes=[first, second],
        )
    return None
