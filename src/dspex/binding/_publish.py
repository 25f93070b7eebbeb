"""Layer 3: :func:`publish`, which moves compiled values of bound hooks into the session.

An optimizer compiles by assigning ``predictor.signature``/``demos`` on its copy of the program;
on a bound predictor those assigned values win over the variables (see
:mod:`dspex.binding._predictor`). ``publish(program)`` writes them into the bound variables in
one atomic batch, so every process that runs the program (``dspex.Remote`` workers included)
uses them on its next call, and hands the hooks back to the variables. ``rollback()`` on the
result writes the values from before, again as one batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dspy

from dspex._model import VariableRecord
from dspex.binding._predictor import (
    HookedPredictor,
    assigned_hooks,
    local_view,
    release,
    winning,
)
from dspex.binding._state import plain
from dspex.binding._values import Binding
from dspex.errors import BindingError, VariableNotFoundError
from dspex.session import Session, current_session

__all__ = ["Published", "publish"]


@dataclass(frozen=True)
class Published:
    """What :func:`publish` wrote.

    Attributes:
        session: the session written to.
        records: variable name -> new record, for the values that changed.
        previous: variable name -> value before the publish (what :meth:`rollback` restores).
        kept: ``"path.hook"`` of assigned values that no variable is bound to; they stay on
            their predictors and keep being used.
    """

    session: Session
    records: Mapping[str, VariableRecord]
    previous: Mapping[str, Any]
    kept: tuple[str, ...] = field(default=())

    def rollback(self) -> dict[str, Any]:
        """Write the values from before the publish back, as one atomic batch.

        Raises:
            BatchUpdateError: a variable changed since the publish (nothing was written).
        """
        if not self.previous:
            return {}
        expected = {name: record.version for name, record in self.records.items()}
        return dict(
            self.session.update(dict(self.previous), atomic=True, expected_versions=expected)
        )


def publish(program: Any) -> Published:
    """Publish the compiled instructions, demos and config of ``program``'s bound hooks.

    Call it on the program an optimizer returned (``compiled = tp.compile(program, ...)``), inside
    the session that should receive the values. Values assigned after ``bind`` to a bound
    predictor's ``signature`` (its task instructions), ``demos`` or ``config`` (bound LM keywords)
    go into the variables bound to those hooks, in one atomic batch; the predictors then follow
    the variables again.

    Returns:
        :class:`Published`, with ``rollback()`` to restore the previous values.

    Raises:
        SessionError: no session is active.
        BindingError: ``program`` is not a dspy.Module; two predictors compiled different values
            for one variable; or compiled instructions rewrote text the module adds after the
            task instructions (ReAct's tool protocol), which an instructions variable cannot hold.
        BatchUpdateError: a value breaks its variable's constraints, or a variable is locked by
            another optimizer (nothing was written). Inside ``session.optimizing(...)`` the
            batch is written as that lock's holder.
    """
    if not isinstance(program, dspy.Module):
        raise BindingError(
            f"publish() needs the compiled dspy.Module, got {type(program).__name__}",
            module=type(program).__name__,
        )
    session = current_session()
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    bindings: dict[str, Binding] = {}
    releases: list[tuple[Any, frozenset[str]]] = []
    kept: list[str] = []
    for found_path, predictor in _predictors(program):
        path = _display(found_path, program)
        assigned = assigned_hooks(predictor)
        if not assigned:
            continue
        found, unbound = _compiled(path, predictor, assigned)
        kept.extend(f"{path}.{hook}" for hook in sorted(unbound))
        for binding, value in found:
            name = binding.name
            if name in values and values[name] != value:
                raise BindingError(
                    f"{origin[name]} and {path} hold different compiled values for variable "
                    f"{name!r}; bind a separate variable to each predictor to publish both "
                    "(nothing was published)",
                    name=name,
                )
            values[name], origin[name], bindings[name] = value, path, binding
        releases.append((predictor, assigned - unbound))
    records, previous = _write(session, values, bindings)
    for predictor, hooks in releases:
        release(predictor, hooks)
    return Published(session, records, previous, tuple(kept))


def _predictors(program: Any) -> list[tuple[str, Any]]:
    """The program's bound predictors, as DSPy's ``named_predictors()`` finds them.

    Not every module reachable from it: optimizers attach the candidates they tried
    (``candidate_programs``), whose values are not the compiled ones.
    """
    return [(p, m) for p, m in program.named_parameters() if isinstance(m, HookedPredictor)]


def _display(path: str, program: Any) -> str:
    """``a.predict`` as is; the program itself (``self``) by its class name."""
    return type(program).__name__ if path == "self" else path


def _compiled(
    path: str, predictor: Any, assigned: frozenset[str]
) -> tuple[list[tuple[Binding, Any]], frozenset[str]]:
    """The (binding, value) pairs assigned on one predictor, and the assigned unbound hooks."""
    hooks = winning(predictor)
    found: list[tuple[Binding, Any]] = []
    unbound: set[str] = set()
    with local_view():
        if "demos" in assigned:
            if hooks.demos is None:
                unbound.add("demos")
            else:
                demos = dspy.Predict.dump_state(predictor)["demos"]
                found.append((hooks.demos, demos))
        if "signature" in assigned:
            if hooks.instructions is None:
                unbound.add("signature")
            else:
                found.append((hooks.instructions, _task_part(path, predictor, hooks.suffix)))
        if "config" in assigned:
            own = predictor.config
            found.extend((b, own[b.hook]) for b in hooks.config if b.hook in own)
            if not hooks.config:
                unbound.add("config")
    return found, frozenset(unbound)


def _task_part(path: str, predictor: Any, suffix: str) -> str:
    text: str = predictor.signature.instructions
    if not suffix:
        return text
    if text.endswith(suffix):
        return text[: len(text) - len(suffix)]
    if text == suffix.lstrip("\n"):
        return ""
    raise BindingError(
        f"the compiled instructions of {path} rewrote the text its module adds after the task "
        "instructions (ReAct's protocol and tool list), which an instructions variable cannot "
        "hold; keep running the compiled program, or bind instructions per predictor "
        "(nothing was published)",
        predictor=path,
    )


def _write(
    session: Session, values: dict[str, Any], bindings: dict[str, Binding]
) -> tuple[dict[str, VariableRecord], dict[str, Any]]:
    """One atomic batch of the changed values; returns (new records, previous values)."""
    current: dict[str, VariableRecord] = {}
    for name, binding in bindings.items():
        try:
            current[name] = session.variable(name)
        except VariableNotFoundError:
            if binding.declared is None:
                raise
            current[name] = binding.declared.register()
    changed = {n: v for n, v in values.items() if not _equal(current[n].value, v)}
    if not changed:
        return {}, {}
    expected = {n: current[n].version for n in changed}
    results = session.update(changed, atomic=True, expected_versions=expected)
    records = {n: r for n, r in results.items() if isinstance(r, VariableRecord)}
    return records, {n: plain(current[n].value) for n in changed}


def _equal(stored: Any, value: Any) -> bool:
    return bool(plain(stored) == value)
