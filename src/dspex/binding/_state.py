"""Layer 3: the ``dspex_variables`` section that ``save``/``load`` add to DSPy's program state.

DSPy's ``dump_state`` keeps signatures and demos but drops ``Predict.config`` (temperature,
max_tokens ...). A bound predictor's signature and demos in that state are the ones it runs
with (plain DSPy loads and runs them); the bound values live in the session, so each bound
predictor also writes the spec and current value of every variable bound to it into a section
of its own state (so any ``dspy.Module`` containing a bound module saves them, under unchanged
parameter names), and :class:`~dspex.Program` adds one top-level section for its
declarations. Loading sets them in the current session, and a loaded signature or demos equal
to what the saved variables give stay with the variables (see ``HookedPredictor.load_state``).

A ``Program`` checks every section of a state first and sets them in one atomic batch. A plain
``dspy.Module`` loads its predictors one by one, so each bound predictor checks and sets its own
section as DSPy reaches it (DSPy's trial load on a copy reaches them first).

``save(dir, save_program=True)`` pickles the whole program; :class:`SavedVariables` (a mixin of
``dspex.Program`` and of bound modules) puts the section into that pickle, and ``dspy.load``
applies it in the current session (or, without one, on the first call inside one).

Section format (plain JSON)::

    "dspex_variables": {
        "temperature": {"type": "float", "constraints": {"min": 0.0, "max": 2.0},
                        "value": 0.2, "version": 3},
        ...
    }
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from dspex._model import VariableRecord, VariableSpec, make_spec, validate
from dspex.errors import (
    DspexError,
    SessionError,
    VariableError,
    VariableExistsError,
    VariableNotFoundError,
)
from dspex.session import Session, current_session
from dspex.variables import Variable

__all__ = [
    "SECTION",
    "SavedVariables",
    "dump_variables",
    "loading",
    "loading_section",
    "one_read",
    "plain",
    "prepare_load",
    "read_records",
    "register_saved",
]

SECTION = "dspex_variables"


def plain(value: Any) -> Any:
    """A JSON-ready copy: arrays -> nested lists, tuples -> lists, frozen containers -> plain."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _active_session() -> Session | None:
    try:
        return current_session()
    except SessionError:
        return None


def dump_variables(
    named: Sequence[tuple[str, Variable | None]], *, registered_only: bool = False
) -> dict[str, Any]:
    """Return the section for ``named`` variables (name, declaration or None).

    Values come from the current session; without one, declared variables are written with
    their defaults (``"version": null``) unless ``registered_only``, and name-only bindings,
    whose spec lives only in a session, are left out.
    """
    session = _active_session()
    section: dict[str, Any] = {}
    for name, declared in named:
        record = _record(session, name)
        if record is not None:
            spec, value, version = record.spec, record.value, record.version
        elif declared is not None and not registered_only:
            spec, value, version = declared.spec, declared.default, None
        else:
            continue
        section[name] = {**spec.to_json(), "value": plain(value), "version": version}
    return section


def _record(session: Session | None, name: str) -> VariableRecord | None:
    records = read_records()
    if records is not None and name in records:
        return records[name]
    if session is None:
        return None
    try:
        return session.variable(name)
    except VariableNotFoundError:
        return None


def _parse_entry(name: str, entry: Any) -> tuple[VariableSpec, Any]:
    if not isinstance(entry, Mapping) or "type" not in entry or "value" not in entry:
        raise VariableError(
            f"saved variable {name!r} is malformed: expected an object with 'type', "
            f"'constraints' and 'value', got {entry!r}",
            name=name,
        )
    spec = make_spec(entry["type"], **dict(entry.get("constraints") or {}))
    return spec, validate(spec, entry["value"], name)


def register_saved(name: str, entry: Any) -> None:
    """Register a saved variable in the current session; an existing one keeps its value.

    Raises:
        VariableExistsError: the session holds it with another spec.
        ConstraintError, VariableValueError: the saved spec or value is invalid.
    """
    spec, value = _parse_entry(name, entry)
    session = current_session()
    session.provider.register_variable(session.session_id, name, spec, value)


def prepare_load(
    section: Mapping[str, Any], declared: Mapping[str, Variable]
) -> Callable[[], None]:
    """Check a saved section against the session and the program; return the commit step.

    Everything is validated first (specs, values, conflicts with the program's declarations and
    with variables already in the session), so a bad file changes nothing. The returned function
    registers missing variables and sets changed values in one atomic batch.

    Raises:
        SessionError: no session is active (load inside ``with dspex.Session(): ...``).
        VariableExistsError: a saved spec differs from the declaration or the session's spec.
        ConstraintError, VariableValueError: the saved spec or value is invalid.
    """
    try:
        session = current_session()
    except SessionError as exc:
        raise SessionError(
            "loading saved dspex variables needs an active session; call load() inside "
            "`with dspex.Session(): ...`"
        ) from exc
    plan: list[tuple[str, VariableSpec, Any, VariableRecord | None]] = []
    for name, entry in section.items():
        spec, value = _parse_entry(name, entry)
        if name in declared and declared[name].spec != spec:
            raise VariableExistsError(
                f"saved variable {name!r} has spec {spec.to_json()} but the program declares "
                f"{declared[name].spec.to_json()}; nothing was loaded",
                name=name,
            )
        existing = _record(session, name)
        if existing is not None and existing.spec != spec:
            raise VariableExistsError(
                f"saved variable {name!r} has spec {spec.to_json()} but session "
                f"{session.session_id!r} holds it as {existing.spec.to_json()}; "
                "nothing was loaded",
                name=name,
            )
        plan.append((name, spec, value, existing))

    def commit() -> None:
        changed: dict[str, Any] = {}
        for name, spec, value, existing in plan:
            record = existing or session.provider.register_variable(
                session.session_id, name, spec, value
            )
            if not _same(record.value, value):
                changed[name] = value
        if changed:
            session.update(changed, atomic=True)

    return commit


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (ValueError, TypeError, DspexError):  # arrays compare element-wise
        return False


_LOADING: ContextVar[Mapping[str, Any] | None] = ContextVar("dspex_loading", default=None)


@contextmanager
def loading(section: Mapping[str, Any]) -> Iterator[None]:
    """While a ``Program`` loads its state: the saved section, for its bound predictors.

    ``Program.load_state`` takes the sections out of its predictors' states (to set them in one
    batch); a bound predictor still needs them to tell its bound values from compiled ones.
    """
    token = _LOADING.set(section)
    try:
        yield
    finally:
        _LOADING.reset(token)


def loading_section() -> Mapping[str, Any] | None:
    """The section set by :func:`loading` (None outside a ``Program`` load)."""
    return _LOADING.get()


_READ: ContextVar[Mapping[str, VariableRecord | None] | None] = ContextVar(
    "dspex_one_read", default=None
)


@contextmanager
def one_read(names: Iterable[str]) -> Iterator[None]:
    """While a bound module, program or predictor dumps its state: its variables read once.

    A save writes each bound value twice, as the instructions/demos in DSPy's own fields and
    in the ``dspex_variables`` sections; reading the session for each would mix two versions
    when another thread or process sets the values meanwhile, and the save would load as a
    program that no longer follows its variables. So the save reads them once, at one revision,
    as a bound call does. Nested uses keep the outermost read; without a session it does
    nothing.
    """
    session = _active_session()
    if _READ.get() is not None or session is None:
        yield
        return
    token = _READ.set(_read_at_once(session, list(dict.fromkeys(names))))
    try:
        yield
    finally:
        _READ.reset(token)


def _read_at_once(session: Session, names: list[str]) -> dict[str, VariableRecord | None]:
    """The records of ``names`` at one revision (None for names the session does not hold)."""
    found: dict[str, VariableRecord | None] = dict.fromkeys(names)
    wanted = list(names)
    while wanted:
        try:
            found.update(session.provider.get_variables(session.session_id, wanted))
            break
        except VariableNotFoundError as exc:
            missing = exc.details.get("name")
            if missing not in wanted:
                raise
            wanted.remove(missing)
    return found


def read_records() -> Mapping[str, VariableRecord | None] | None:
    """The records read by :func:`one_read` (None outside it; a name maps to None when the
    session did not hold it)."""
    return _READ.get()


_SAVING: ContextVar[Any] = ContextVar("dspex_saving", default=None)
_SAVED_KEY = "_dspex_saved_variables"


class SavedVariables:
    """Mixin: ``save(..., save_program=True)`` and ``dspy.load`` keep the variables.

    The class using it provides ``named_variables()``.
    """

    def named_variables(self) -> list[tuple[str, Variable | None]]:  # pragma: no cover
        raise NotImplementedError

    def save(self, path: Any, save_program: bool = False, modules_to_serialize: Any = None) -> Any:
        """DSPy's ``save``; with ``save_program=True`` the pickle also holds the variables."""
        token = _SAVING.set(self if save_program else None)
        try:
            return super().save(  # type: ignore[misc]
                path, save_program=save_program, modules_to_serialize=modules_to_serialize
            )
        finally:
            _SAVING.reset(token)

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """DSPy's state, with the variables read once for the whole save (see
        :func:`one_read`)."""
        with one_read(name for name, _ in self.named_variables()):
            state: dict[str, Any] = super().dump_state(json_mode=json_mode)  # type: ignore[misc]
        return state

    def __getstate__(self) -> dict[str, Any]:
        raw: Any = super().__getstate__()  # type: ignore[misc]
        state: dict[str, Any] = raw
        if _SAVING.get() is self:
            state[_SAVED_KEY] = dump_variables(self.named_variables())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        saved = state.pop(_SAVED_KEY, None)
        super().__setstate__(state)  # type: ignore[misc]
        if saved:
            self.__dict__["_dspex_pending"] = saved
            if _active_session() is not None:
                self.apply_pending()

    def apply_pending(self) -> None:
        """Set the variables a ``dspy.load``-ed program carried, once, in the current session."""
        saved = self.__dict__.get("_dspex_pending")
        if saved is None or _active_session() is None:
            return
        declared = {n: v for n, v in self.named_variables() if v is not None}
        prepare_load(saved, declared)()
        self.__dict__.pop("_dspex_pending", None)
