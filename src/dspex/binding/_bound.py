"""Layer 3: :class:`BoundModule` and :func:`bind` (see :mod:`dspex.binding` for the mechanism)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dspy

from dspex._model import VariableRecord, VariableSpec, type_name
from dspex.binding._adapter import HookAdapter, Overrides, resolve_lm
from dspex.binding._hooks import HOOK_KINDS, HOOKS, check_fit, check_hook
from dspex.binding._state import SECTION, dump_variables, prepare_load
from dspex.errors import BindingError, SessionError, VariableNotFoundError
from dspex.session import Session, current_session
from dspex.variables import Variable

__all__ = ["BoundModule", "bind"]


@dataclass(frozen=True)
class _Binding:
    """One hook -> variable pair, checked at bind time (deep-copyable, picklable)."""

    hook: str  # the LM keyword, or "instructions" / "demos" / "lm"
    kind: str  # "config", "instructions", "demos" or "lm"
    name: str  # the variable name in the session
    declared: Variable | None  # the declaration, when a Variable (not a name) was bound


class _Plan:
    """What a BoundModule resolves per call: its bindings and the variable names to read.

    Kept apart from the module so the per-call path reads plain attributes (a ``dspy.Module``
    routes every attribute read through a Python-level ``__getattribute__``).
    """

    __slots__ = ("bindings", "names")

    def __init__(self, bindings: tuple[_Binding, ...]) -> None:
        self.__setstate__(bindings)

    def __getstate__(self) -> tuple[_Binding, ...]:
        return self.bindings

    def __setstate__(self, bindings: tuple[_Binding, ...]) -> None:
        self.bindings = bindings
        self.names = tuple(dict.fromkeys(b.name for b in bindings))

    def hooks(self, module: Any) -> dict[str, Any]:
        """The ``dspy.context`` settings for one call.

        The hook adapter, the bound LM (so predictors run even with no LM configured), and the
        session itself, so that thread pools started inside the call (``dspy.Parallel`` in a
        custom module) resolve in the same session.
        """
        session = current_session()
        overrides = self.resolve(module, session)
        current = dspy.settings.adapter
        if type(current) is HookAdapter:  # nested bind: inner values win per hook
            adapter = HookAdapter(current.inner, overrides.over(current.overrides))
        else:
            adapter = HookAdapter(
                current if current is not None else dspy.ChatAdapter(), overrides
            )
        settings = {"adapter": adapter, "dspex_session": session}
        if adapter.overrides.lm is not None:
            settings["lm"] = adapter.overrides.lm
        return settings

    def resolve(self, module: Any, session: Session) -> Overrides:
        """Read the bound variables once (one snapshot) and turn them into overrides."""
        records = self._records(module, session)
        config: dict[str, Any] = {}
        instructions: str | None = None
        demos: list[Any] | None = None
        lm: Any = None
        for b in self.bindings:
            record = records[b.name]
            check_fit(b.hook, b.kind, b.name, record.spec)
            value = record.value
            kind = b.kind
            if kind == "config":
                config[b.hook] = value
            elif kind == "instructions":
                instructions = value
            elif kind == "demos":
                demos = _demos(b.name, value)
            else:
                lm = resolve_lm(value)
        task = None
        if instructions is not None:
            task = getattr(module, "signature", None)
            if not isinstance(task, type):
                task = None
        return Overrides(config, instructions, task, demos, lm)

    def _records(self, module: Any, session: Session) -> dict[str, VariableRecord]:
        try:
            return session.provider.get_variables(session.session_id, self.names)
        except VariableNotFoundError:
            pass
        for b in self.bindings:  # first use in this session: register the declarations
            if b.declared is not None:
                b.declared.register()
        try:
            return session.provider.get_variables(session.session_id, self.names)
        except VariableNotFoundError as exc:
            name = exc.details.get("name")
            hooks = [b.hook for b in self.bindings if b.name == name] or ["?"]
            raise VariableNotFoundError(
                f"bound hook {hooks[0]!r} of {type(module).__name__} uses variable {name!r}, "
                f"which is not registered in session {session.session_id!r}; register it "
                "(session.register(...)) or bind a dspex.Variable declaration instead of a name",
                name=name,
                session_id=session.session_id,
                hook=hooks[0],
            ) from exc


# ------------------------------------------------------------------------------------------
# the wrapper module


class BoundModule(dspy.Module):  # type: ignore[misc]
    """A ``dspy.Module`` running ``module`` with session variables on its per-call hooks.

    Build it with :func:`bind`. ``module`` stays a normal attribute, so DSPy's
    ``named_predictors``, optimizers, ``deepcopy``, ``save``/``load`` and cloudpickle see it.

    The wrapper is transparent to DSPy's call machinery: calling it enters the hook context and
    calls ``module``, whose own ``__call__`` runs the callbacks, records LM history and tracks
    usage. The wrapper adds no second module event per call, so ``inspect_history`` is
    delegated to ``module``.

    Attributes:
        module: the wrapped DSPy module.
    """

    def __init__(self, module: Any, bindings: tuple[_Binding, ...]) -> None:
        super().__init__()
        self.module = module
        self._plan = _Plan(bindings)

    @property
    def bindings(self) -> dict[str, str]:
        """Hook name -> bound variable name."""
        return {b.hook: b.name for b in self._plan.bindings}

    def named_variables(self) -> list[tuple[str, Variable | None]]:
        """The bound variables: (name, declaration or None when bound by name)."""
        seen: dict[str, Variable | None] = {}
        for b in self._plan.bindings:
            if seen.get(b.name) is None:
                seen[b.name] = b.declared
        return list(seen.items())

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """DSPy's state plus the bound variables' specs and values (see ``dspex_variables``)."""
        state: dict[str, Any] = super().dump_state(json_mode=json_mode)
        state[SECTION] = dump_variables(self.named_variables())
        return state

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> Any:
        """Load DSPy's state, then set the saved variables in the current session."""
        section = state.get(SECTION)
        declared = {n: v for n, v in self.named_variables() if v is not None}
        commit = prepare_load(section, declared) if section is not None else None
        super().load_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        if commit is not None:
            commit()
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module = self.module
        with dspy.context(**self._plan.hooks(module)):
            return module(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Async call: ``await bound.acall(...)`` runs the wrapped module's ``acall``."""
        module = self.module
        with dspy.context(**self._plan.hooks(module)):
            return await module.acall(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Same as calling the wrapper (kept for DSPy's ``Module`` interface)."""
        return self.__call__(*args, **kwargs)

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        """Same as :meth:`acall`."""
        return await self.acall(*args, **kwargs)

    def inspect_history(self, n: int = 1, file: Any = None) -> None:
        """Print the wrapped module's last ``n`` LM calls."""
        self.module.inspect_history(n, file=file)


def _demos(name: str, value: Any) -> list[Any]:
    if isinstance(value, list):
        bad = next((i for i, d in enumerate(value) if not isinstance(d, dict)), None)
        if bad is None:
            return [dict(d) for d in value]
        found = f"a list whose item {bad} is a {type_name(value[bad])}"
    else:
        found = f"a {type_name(value)}"
    raise BindingError(
        f"variable {name!r} is bound to 'demos' but holds {found}; demos must be a JSON list "
        "of objects, one per example, e.g. [{'question': '...', 'answer': '...'}]",
        name=name,
        hook="demos",
    )


# ------------------------------------------------------------------------------------------
# bind


def bind(module: Any, /, **bindings: Any) -> BoundModule:
    """Bind session variables to DSPy's per-call hooks of ``module``.

    Args:
        module: any ``dspy.Module`` (``Predict``, ``ChainOfThought``, ``ReAct``, your own).
        **bindings: hook name -> ``dspex.Variable`` (or a registered variable's name). Hooks:
            ``instructions`` (string), ``demos`` (json list of objects), ``lm`` (string or choice
            of model names: ``dspex/sim...`` is the built-in simulation, anything else goes to
            ``dspy.LM``), any common LM keyword (``temperature``, ``max_tokens``, ``top_p``,
            ``n``, ``stop``, ``seed`` ...), and ``config={"kwarg": variable}`` for any other LM
            keyword.

    Returns:
        A :class:`BoundModule` that resolves the values from the current session on every call.
        Declared variables are registered now when a session is active (existing values are
        kept), otherwise on the first call inside one.

    Raises:
        BindingError: ``module`` is not a ``dspy.Module``; a hook does not exist; a value is not
            a variable; or a variable's type does not fit its hook.

    Examples:
        >>> import dspy, dspex
        >>> temperature = dspex.Variable(float, 0.7, name="temperature", min=0.0, max=2.0)
        >>> qa = dspex.bind(dspy.Predict("question -> answer"), temperature=temperature)
    """
    if not isinstance(module, dspy.Module):
        raise BindingError(
            f"bind() needs a dspy.Module (Predict, ChainOfThought, ReAct, ...), "
            f"got {type(module).__name__}",
            module=type(module).__name__,
        )
    if not bindings:
        raise BindingError(
            f"bind() got no bindings; pass hook=variable pairs, hooks: {', '.join(HOOKS)}"
        )
    pairs: list[_Binding] = []
    for hook, target in bindings.items():
        if hook == "config":
            pairs.extend(_config_bindings(module, target))
        else:
            pairs.append(_make_binding(module, check_hook(module, hook), hook, target))
    if _active_session() is not None:
        for pair in pairs:
            if pair.declared is not None:
                pair.declared.register()
    return BoundModule(module, tuple(pairs))


def _config_bindings(module: Any, targets: Any) -> list[_Binding]:
    if not isinstance(targets, Mapping) or not targets:
        raise BindingError(
            "config= takes a non-empty mapping of LM keyword -> variable, "
            f"e.g. config={{'logit_bias': bias}}; got {targets!r}"
        )
    pairs = []
    for kwarg, target in targets.items():
        if not isinstance(kwarg, str) or not kwarg.isidentifier() or kwarg in HOOK_KINDS:
            raise BindingError(
                f"config key {kwarg!r} is not an LM keyword argument name"
                + (
                    f"; bind {kwarg!r} directly: bind(module, {kwarg}=...)"
                    if kwarg in HOOK_KINDS
                    else ""
                )
            )
        pairs.append(_make_binding(module, "config", kwarg, target))
    return pairs


def _make_binding(module: Any, kind: str, hook: str, target: Any) -> _Binding:
    if isinstance(target, Variable):
        if not target.name:
            raise BindingError(
                f"the variable bound to {hook!r} has no name; declare it as a dspex.Program "
                "class attribute or pass name=... to dspex.Variable",
                hook=hook,
            )
        check_fit(hook, kind, target.name, target.spec)
        return _Binding(hook, kind, target.name, target)
    if isinstance(target, str) and target:
        spec = _registered_spec(target)
        if spec is not None:
            check_fit(hook, kind, target, spec)
        return _Binding(hook, kind, target, None)
    raise BindingError(
        f"{hook}= must be a dspex.Variable or a variable name, not {target!r}; "
        "for a fixed value pass it to the DSPy module itself "
        f"(e.g. dspy.Predict(..., {hook}=...))",
        hook=hook,
    )


def _active_session() -> Session | None:
    try:
        return current_session()
    except SessionError:
        return None


def _registered_spec(name: str) -> VariableSpec | None:
    """The spec of ``name`` in the current session, when there is one (checked early)."""
    session = _active_session()
    if session is None:
        return None
    try:
        return session.provider.get_variable(session.session_id, name).spec
    except VariableNotFoundError:  # not registered yet: checked at call time instead
        return None
