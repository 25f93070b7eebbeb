"""Layer 3: :class:`BoundModule` and :func:`bind` (see :mod:`dspex.binding` for the mechanism)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dspy
from dspy.dsp.utils.settings import main_thread_config, thread_local_overrides

from dspex import _tracing
from dspex._model import VariableRecord, VariableSpec
from dspex.binding._classes import Hooked, add_kind, own_dict, register_mixin
from dspex.binding._hooks import HOOK_KINDS, HOOKS, check_fit, check_hook
from dspex.binding._models import bound_lm, keywords_of, lm_for_key, share_lists
from dspex.binding._predictor import HookedPredictor, hook_predictor, hooked_variables
from dspex.binding._state import SavedVariables, dump_variables, register_saved
from dspex.binding._values import (
    BOUND_LM_KEY,
    VALUES_KEY,
    Binding,
    Layer,
    check_travel,
    demos_value,
)
from dspex.errors import BindingError, SessionError, VariableNotFoundError
from dspex.session import Session, current_session
from dspex.variables import Variable

__all__ = ["BoundModule", "bind", "bound_variables"]

_CARRIED = "_dspex_carried"
_SPAN = "dspex.bind "
"""A traced bound call is a span named after the module, with the variable names and versions
it read (``dspex.variable.names`` / ``dspex.variable.versions``; see :mod:`dspex._tracing`)."""


class _Plan:
    """What a bind boundary resolves per call: its bindings and the variable names to read.

    Kept apart from the module so the per-call path reads plain attributes (a ``dspy.Module``
    routes every attribute read through a Python-level ``__getattribute__``).
    """

    __slots__ = ("_checked", "_memo", "bindings", "names")

    def __init__(self, bindings: tuple[Binding, ...]) -> None:
        self.__setstate__(bindings)

    def __getstate__(self) -> tuple[Binding, ...]:
        check_travel(self.bindings)
        return self.bindings

    def __setstate__(self, bindings: tuple[Binding, ...]) -> None:
        self.bindings = bindings
        self.names = tuple(dict.fromkeys(b.name for b in bindings))
        # Per-call caches (a lost race only recomputes): the spec each binding was last
        # checked against (records share spec objects), and the last bound LM.
        self._checked: dict[int, Any] = {}
        self._memo: tuple[Any, ...] = (None, None, None, None, None)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Plan:
        return self  # never changed after construction (bind builds a new one)

    def call_overlay(self, module: Any) -> Any:
        """The DSPy settings overlay of one bound call (one snapshot of the variables).

        The current overlay plus ``dspex_values`` (what the hooked predictors read), the session
        (so thread pools started inside resolve in it), and, when LM keywords or the model are
        bound, the bound LM copy: what ``dspy.context(**those)`` would set, without its copy of
        the process-wide settings (DSPy reads those when a key is not in the overlay).
        """
        session = current_session()
        records = self._records(module, session)
        if _tracing.enabled():
            _tracing.note_variables(
                session.session_id, list(self.names), [records[n].version for n in self.names]
            )
        values: dict[str, Any] = {}
        config: dict[str, Any] = {}
        chosen: Any = None
        checked = self._checked
        for index, b in enumerate(self.bindings):
            record = records[b.name]
            if checked.get(index) is not record.spec:
                check_fit(b.hook, b.kind, b.name, record.spec)
                checked[index] = record.spec
            value = record.value
            kind = b.kind
            if kind == "config":
                config[b.hook] = value
            elif kind == "demos":
                value = demos_value(b.name, value)
            elif kind == "lm":
                chosen = lm_for_key(value, b.models)
            values[b.name] = value
        overlay = thread_local_overrides.get()
        outer = overlay.get(VALUES_KEY)
        new = type(overlay)(overlay)
        new[VALUES_KEY] = {**outer, **values} if outer else values
        new["dspex_session"] = session
        if config or chosen is not None:
            current = overlay["lm"] if "lm" in overlay else main_thread_config.get("lm")
            lm = self._bound_lm(current, chosen, config)
            if lm is not None:
                new["lm"] = new[BOUND_LM_KEY] = lm
        return new

    def _bound_lm(self, current: Any, chosen: Any, config: dict[str, Any]) -> Any:
        """:func:`bound_lm`, remembered for the last (current LM, chosen LM, config) while the
        base LM's keywords stay as they were."""
        items = tuple(config.items())
        memo = self._memo
        base = chosen if chosen is not None else current
        keywords = keywords_of(base)
        same = memo[0] is current and memo[1] is chosen and memo[2] == items
        if same and memo[4] == keywords:
            # the base LM's history/callbacks lists may have been replaced (see bound_lm)
            return share_lists(base, memo[3])
        lm = bound_lm(current, chosen, config, main_thread_config.get("lm"))
        snapshot = None if keywords is None else dict(keywords)
        self._memo = (current, chosen, items, lm, snapshot)
        return lm

    def _records(self, module: Any, session: Session) -> dict[str, VariableRecord]:
        try:
            return session.provider.get_variables(session.session_id, self.names)
        except VariableNotFoundError:
            pass
        carried = module.__dict__.get(_CARRIED) or {}
        for b in self.bindings:  # first use in this session: register the declarations
            if b.name in carried:  # a loaded program brings its saved value
                register_saved(b.name, carried[b.name])
            elif b.declared is not None:
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
# the bind boundary


class BoundModule(SavedVariables, Hooked):
    """Mixin of a module passed to :func:`bind`: its calls are the bind boundary.

    ``bind`` switches the module, in place, to a subclass of its own class with this mixin (same
    class name; ``isinstance`` checks, attribute paths, ``named_parameters()`` and
    ``named_predictors()`` stay as they were). Calling it sets DSPy's context overlay for the
    call (as ``dspy.context(dspex_values=..., dspex_session=..., [lm=...])`` would) and then
    runs the module's own ``__call__``/``acall`` (callbacks, history, usage as usual).
    """

    @property
    def bindings(self) -> dict[str, str]:
        """Hook name -> bound variable name, for the hooks bound on this module."""
        return {b.hook: b.name for b in own_dict(self)["_dspex_plan"].bindings}

    def named_variables(self) -> list[tuple[str, Variable | None]]:
        """The bound variables: (name, declaration or None when bound by name)."""
        seen: dict[str, Variable | None] = {}
        for b in own_dict(self)["_dspex_plan"].bindings:
            if seen.get(b.name) is None:
                seen[b.name] = b.declared
        for name, declared in bound_variables(self):
            if seen.get(name) is None:
                seen[name] = declared
        return list(seen.items())

    def __getstate__(self) -> dict[str, Any]:
        """Pickled state: a pickled bound module carries its variables' specs and values.

        Loaded in a session that lacks them (``dspy.load`` of a plain ``dspy.Module`` saved
        with ``save_program=True``), they are registered with those values on the first call;
        a session that has them keeps its own values (``dspex.Remote`` workers).
        """
        state: dict[str, Any] = super().__getstate__()
        state[_CARRIED] = dump_variables(self.named_variables(), registered_only=True)
        return state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _tracing.enabled():
            with _tracing.span(_SPAN + type(self).__name__):
                return self._call_bound(*args, **kwargs)
        return self._call_bound(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Async call: the module's own ``acall`` inside the bind boundary."""
        if _tracing.enabled():
            with _tracing.span(_SPAN + type(self).__name__):
                return await self._acall_bound(*args, **kwargs)
        return await self._acall_bound(*args, **kwargs)

    def _call_bound(self, *args: Any, **kwargs: Any) -> Any:
        d = own_dict(self)
        if "_dspex_pending" in d:
            self.apply_pending()
        token = thread_local_overrides.set(d["_dspex_plan"].call_overlay(self))
        try:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        finally:
            thread_local_overrides.reset(token)

    async def _acall_bound(self, *args: Any, **kwargs: Any) -> Any:
        d = own_dict(self)
        if "_dspex_pending" in d:
            self.apply_pending()
        token = thread_local_overrides.set(d["_dspex_plan"].call_overlay(self))
        try:
            return await super().acall(*args, **kwargs)  # type: ignore[misc]
        finally:
            thread_local_overrides.reset(token)


register_mixin("boundary", BoundModule)


def bound_variables(module: Any) -> list[tuple[str, Variable | None]]:
    """(name, declaration) of the variables bound to the predictors inside ``module``."""
    seen: dict[str, Variable | None] = {}
    for _, predictor in module.named_sub_modules(type_=HookedPredictor):
        for name, declared in hooked_variables(predictor):
            if seen.get(name) is None:
                seen[name] = declared
    return list(seen.items())


# ------------------------------------------------------------------------------------------
# bind


def bind(module: Any, /, **bindings: Any) -> BoundModule:
    """Bind session variables to DSPy's per-call hooks of ``module``.

    Args:
        module: any ``dspy.Module`` (``Predict``, ``ChainOfThought``, ``ReAct``, your own).
        **bindings: hook name -> ``dspex.Variable`` (or a registered variable's name). Hooks:
            ``instructions`` (string: each predictor's task instructions), ``demos`` (json list
            of objects: each predictor's demos), ``lm`` (a key of a ``dspex.Choice`` mapping keys
            to configured ``dspy.LM`` objects, or a model name: ``dspex/sim...`` is the built-in
            simulation, ``provider/model`` goes to ``dspy.LM``), any common LM keyword
            (``temperature``, ``max_tokens``, ``top_p``, ``n``, ``stop``, ``seed`` ...), and
            ``config={"kwarg": variable}`` for any other LM keyword.

    Returns:
        ``module`` itself, now a :class:`BoundModule` (bound in place: same object, same
        attribute paths and predictor names) that resolves the values from the current session
        on every call. Declared variables are registered now when a session is active (existing
        values are kept), otherwise on the first call inside one.

    Raises:
        BindingError: ``module`` is not a ``dspy.Module`` or holds no ``dspy.Predict``; a hook
            does not exist; a value is not a variable; or a variable's type does not fit its
            hook. At call time: a bad demos value or model name.

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
    pairs: list[Binding] = []
    for hook, target in bindings.items():
        if hook == "config":
            pairs.extend(_config_bindings(module, target))
        else:
            pairs.append(_make_binding(module, check_hook(module, hook), hook, target))
    if _active_session() is not None:
        for pair in pairs:
            if pair.declared is not None:
                pair.declared.register()
    _install(module, tuple(pairs))
    bound: BoundModule = module
    return bound


def _install(module: Any, pairs: tuple[Binding, ...]) -> None:
    """Hook every predictor inside ``module`` and make ``module`` the boundary (in place)."""
    predictors = list(module.named_sub_modules(type_=dspy.Predict))
    if not predictors:
        raise BindingError(
            f"{type(module).__name__} holds no dspy.Predict, so no LM call inside it can be "
            "bound; bind the module that owns the predictors",
            module=type(module).__name__,
        )
    tasks = _task_texts(module) if any(b.kind == "instructions" for b in pairs) else ()
    for path, predictor in predictors:
        distance = path.count(".")
        suffix = _suffix(predictor, tasks)
        hook_predictor(predictor, Layer(distance, pairs, suffix))
    old = module.__dict__.get("_dspex_plan")
    if old is not None:
        new_hooks = {b.hook for b in pairs}
        pairs = tuple(b for b in old.bindings if b.hook not in new_hooks) + pairs
    module.__dict__["_dspex_plan"] = _Plan(pairs)
    add_kind(module, "boundary")


def _own_instructions(predictor: Any) -> str:
    d = predictor.__dict__
    signature = d.get("_dspex_signature", d.get("signature"))
    return str(signature.instructions)


def _task_texts(module: Any) -> tuple[str, ...]:
    """Instructions of the task signatures that modules inside ``module`` were built from.

    ``ReAct`` keeps its task signature as ``self.signature`` and builds its agent predictor's
    instructions as the task instructions followed by its protocol and tool list.
    """
    texts = []
    for _, sub in module.named_sub_modules():
        if isinstance(sub, dspy.Predict):
            continue
        signature = sub.__dict__.get("signature")
        text = getattr(signature, "instructions", None) if isinstance(signature, type) else None
        if isinstance(text, str) and text:
            texts.append(text)
    return tuple(sorted(set(texts), key=len, reverse=True))


def _suffix(predictor: Any, tasks: tuple[str, ...]) -> str:
    """What the predictor's module added after the task instructions ("" when nothing)."""
    own = _own_instructions(predictor)
    for task in tasks:
        if own != task and own.startswith(task):
            return own[len(task) :]
    return ""


def _config_bindings(module: Any, targets: Any) -> list[Binding]:
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


def _make_binding(module: Any, kind: str, hook: str, target: Any) -> Binding:
    if isinstance(target, Variable):
        if not target.name:
            raise BindingError(
                f"the variable bound to {hook!r} has no name; declare it as a dspex.Program "
                "class attribute or pass name=... to dspex.Variable",
                hook=hook,
            )
        check_fit(hook, kind, target.name, target.spec)
        return Binding(hook, kind, target.name, target)
    if isinstance(target, str) and target:
        spec = _registered_spec(target)
        if spec is not None:
            check_fit(hook, kind, target, spec)
        return Binding(hook, kind, target, None)
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
