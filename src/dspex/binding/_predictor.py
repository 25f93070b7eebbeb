"""Layer 3: per-predictor hooks, the attributes a bound ``dspy.Predict`` reads per call.

``Predict.forward`` reads ``self.signature``, ``self.demos``, ``self.config`` and ``self.lm`` on
every call. ``bind`` turns each predictor inside the bound module into an instance of a
*hooked* subclass of its own class (same name, ``isinstance`` unchanged) whose four attributes
are properties:

* ``signature``: the predictor's signature with the bound ``instructions`` as its task
  instructions (text the module added after them, such as ReAct's tool protocol, is kept);
* ``demos``: the bound ``demos``;
* ``config``: the predictor's own config without the keys bound as LM keywords (those reach the
  LM as an LM copy at the bind boundary, see :mod:`dspex.binding._bound`);
* ``lm``: the predictor's own LM (``set_lm``). Inside the bound call, that LM or else the LM in
  effect (the boundary's, or an inner ``dspy.context``'s) with the bound LM keywords applied
  (None when nothing is to apply: ``Predict`` then uses the context's LM, as in DSPy); an LM
  passed per call (``predictor(..., lm=X)``) gets them too. Outside
  the call, with no LM of its own: the LM the boundary would use, so
  ``BestOfN``/``Refine``/``SIMBA`` wrapped around a bound module find it with ``get_lm()``.

Values come from the bound call's snapshot (``dspy.context(dspex_values=...)``, copied by DSPy
into its threads), else from the current session, else the predictor's own value.

Assigning one of these attributes after ``bind`` (an optimizer installing compiled demos or
instructions, ``load_state``, ``reset()``), or editing the demos or config read from it in place
(SIMBA's ``predictor.demos.append``), stores it on the predictor, and the stored value
then wins over the variable, as a value set on a predictor wins in plain DSPy: nothing compiled
is hidden. When such a value differs from the session's variable, a warning names the variable
once; :func:`dspex.publish` moves the compiled values into the variables and hands the hooks
back to them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from dspy.dsp.utils.settings import main_thread_config, thread_local_overrides

from dspex.binding._classes import Hooked, add_kind, own_dict, register_mixin
from dspex.binding._models import bound_lm, lm_for_key
from dspex.binding._state import (
    SECTION,
    dump_variables,
    loading_section,
    one_read,
    prepare_load,
)
from dspex.binding._values import (
    BOUND_LM_KEY,
    UNSET,
    Binding,
    Layer,
    call_values,
    check_travel,
    demos_value,
    instructed,
    session_value,
    value_of,
)
from dspex.errors import BindingError
from dspex.variables import Variable

__all__ = [
    "HookedPredictor",
    "assigned_hooks",
    "hook_predictor",
    "hooked_variables",
    "local_view",
    "release",
    "winning",
]

_LOCAL: ContextVar[bool] = ContextVar("dspex_local_view", default=False)
_DUMPING: ContextVar[bool] = ContextVar("dspex_dumping", default=False)
"""Set while ``dump_state`` runs: ``lm`` read outside a call is the predictor's own (the bound
LM is chosen per call and not saved; resolving it could fail, e.g. on a bad model name), and a
bound value a call would reject (demos that are not objects) leaves the predictor's own value
in DSPy's field (the section keeps the variable's value): a save fails no more than in DSPy."""


class _Hooks:
    """What a hooked predictor reads: the winning binding per hook, derived from its layers."""

    __slots__ = ("config", "config_names", "demos", "instructions", "layers", "lm", "suffix")

    def __init__(self, layers: tuple[Layer, ...]) -> None:
        self.layers = tuple(sorted(layers, key=lambda layer: -layer.distance))  # outer first
        self.instructions: Binding | None = None
        self.demos: Binding | None = None
        self.lm: Binding | None = None
        self.suffix = ""
        config: dict[str, Binding] = {}
        for layer in self.layers:  # inner layers come last and win
            for b in layer.bindings:
                if b.kind == "instructions":
                    self.instructions, self.suffix = b, layer.suffix
                elif b.kind == "demos":
                    self.demos = b
                elif b.kind == "lm":
                    self.lm = b
                else:
                    config[b.hook] = b
        self.config = tuple(config.values())
        self.config_names = frozenset(config)

    def __reduce__(self) -> tuple[Any, ...]:
        check_travel(tuple(self.bindings()))
        return (_Hooks, (self.layers,))

    def __deepcopy__(self, memo: dict[int, Any]) -> _Hooks:
        return self  # never changed after construction (hook_predictor builds a new one)

    def bindings(self) -> list[Binding]:
        """Every binding that reaches this predictor, outer first."""
        return [b for layer in self.layers for b in layer.bindings]


def local_view() -> Any:
    """Context manager: hooked attributes read the predictor's own values (for saving)."""
    return _LocalView()


class _LocalView:
    def __enter__(self) -> None:
        self._token = _LOCAL.set(True)

    def __exit__(self, *exc: object) -> None:
        _LOCAL.reset(self._token)


def _lm_outside(hooks: _Hooks) -> Any:
    """The LM this predictor's bind boundary would run it with (read outside the call)."""
    chosen = None
    if hooks.lm is not None:
        key = session_value(hooks.lm)
        if key is not UNSET:
            chosen = lm_for_key(key, hooks.lm.models)
    config = {}
    for b in hooks.config:
        value = session_value(b)
        if value is not UNSET:
            config[b.hook] = value
    if chosen is None and not config:
        return None
    current = thread_local_overrides.get().get("lm", main_thread_config.get("lm"))
    return bound_lm(current, chosen, config, main_thread_config.get("lm"))


def _keyed_lm(lm: Any, hooks: _Hooks, values: Mapping[str, Any]) -> Any:
    """The LM a predictor runs with inside the bound call, with the bound LM keywords applied.

    The boundary's LM copy carries the keywords, but DSPy runs a predictor with its own ``lm``
    (``set_lm``) instead, and with the LM of a ``dspy.context(lm=...)`` entered inside the bound
    module's forward: those LMs get the keywords here, as ``predictor.config`` gives them in
    DSPy (the LM itself is not replaced: a predictor's own LM and an inner context's keep their
    precedence over a bound ``lm`` choice). The boundary's own copy already has them and comes
    back as is; a rollout copy DSPy made (``BestOfN``, ``Refine``) keeps its ``rollout_id`` and
    temperature, see :func:`bound_lm`.
    """
    config = {b.hook: values[b.name] for b in hooks.config if b.name in values}
    if not config:
        return lm
    return bound_lm(lm, None, config, main_thread_config.get("lm"))


# ------------------------------------------------------------------------------------------
# the hooked attributes


def _warn_shadowed(hook: str, name: str) -> None:
    # Python's warning registry shows it once per variable (the message names it).
    warnings.warn(
        f"a bound predictor holds {hook} assigned after bind (by an optimizer, load_state or "
        f"your code) that differ from variable {name!r} in the session; the assigned {hook} "
        "are used, as in plain DSPy. Call dspex.publish(program) to move them into the "
        "session's variables (the predictors then follow the variables again).",
        UserWarning,
        stacklevel=3,
    )


def _same_demos(local: Any, value: list[dict[str, Any]]) -> bool:
    try:
        return len(local) == len(value) and all(
            dict(d.items()) == v for d, v in zip(local, value, strict=True)
        )
    except (TypeError, AttributeError):
        return False


def _has_instructions(signature: Any, text: str) -> bool:
    return bool(signature.instructions.startswith(text))


def _read(
    predictor: Any,
    attr: str,
    binding: Binding | None,
    same: Callable[[Any, Any], bool],
    suffix: str | None,
) -> Any:
    """A hooked ``signature`` (``suffix`` given) or ``demos`` read: own, assigned or bound."""
    d = own_dict(predictor)
    if binding is None or _LOCAL.get():
        return d[f"_dspex_{attr}"]
    if suffix is not None:
        _settle(predictor, d)
    own = d[f"_dspex_{attr}"]
    if attr in d["_dspex_assigned"]:  # assigned after bind: it wins; say when it hides a value
        value = value_of(binding) if call_values() is not None else UNSET
        if value is not UNSET and not same(own, value):
            _warn_shadowed("instructions" if suffix is not None else attr, binding.name)
        return own
    try:
        value = value_of(binding)
    except BindingError:
        if not _DUMPING.get():
            raise
        return own  # a save keeps the predictor's own value (see _DUMPING)
    if value is UNSET:
        return own
    if suffix is None:
        return AdoptedList(value, predictor)
    return _signature_view(predictor, d, own, value, suffix)


# Bound signatures read from a predictor are classes of its own (a few per predictor, one per
# value read recently, so a call builds none). DSPy code that edits one in place (InferRules sets
# ``predictor.signature.instructions``) edits that class: the next read (or publish) finds the
# edit and makes the class the predictor's own signature, as the edit would in plain DSPy. A
# class shared between predictors or cached process-wide would carry the edit to other
# predictors, and to later reads of the same value (after a rollback, say).

_VIEWS = "_dspex_signature_views"
_MAX_VIEWS = 8


def _signature_view(predictor: Any, d: dict[str, Any], own: Any, text: str, suffix: str) -> Any:
    """The predictor's own class for ``own`` with the bound ``text`` (built on first read);
    ``d`` is the predictor's instance dict."""
    views = _views(predictor, d)
    if views is None:
        views = {}
        d[_VIEWS] = (id(predictor), views)
    key = (own, text, suffix)
    entry = views.get(key)
    if entry is None:
        made = instructed(own, text, suffix)
        entry = (made, made.__dict__.get("__doc__"))
        if len(views) >= _MAX_VIEWS:
            views.clear()
        views[key] = entry
    return entry[0]


def _settle(predictor: Any, d: dict[str, Any]) -> None:
    """Adopt a bound signature read from ``predictor`` (instance dict ``d``) that was edited in
    place since."""
    for made, doc in list((_views(predictor, d) or {}).values()):
        if made.__dict__.get("__doc__") != doc:
            d.pop(_VIEWS, None)
            _assign(predictor, "signature", made)
            return


def _views(
    predictor: Any, d: dict[str, Any]
) -> dict[tuple[Any, str, str], tuple[Any, Any]] | None:
    """The predictor's (instance dict ``d``) bound signature classes; None when it has none,
    or only a copy's."""
    entry = d.get(_VIEWS)
    if entry is None or entry[0] != id(predictor):  # copied over by DSPy's attribute-wise copy
        return None
    views: dict[tuple[Any, str, str], tuple[Any, Any]] = entry[1]
    return views


def _share_views(predictor: Any, copy: Any) -> None:
    """Let ``copy``, made inside a bound call, share ``predictor``'s bound signature classes.

    ``BestOfN`` and ``Refine`` copy their module for every attempt, inside the call: without
    this, each copy built its classes again, a pydantic model per predictor per attempt (about
    1 ms each; a bound BestOfN of 3 ran at 1.8x plain DSPy). Such copies share the classes as
    DSPy's copies share their signature class. A copy made outside a bound call (an
    optimizer's candidate, which may edit its signature in place) keeps classes of its own.
    """
    d = own_dict(predictor)
    views = _views(predictor, d)
    if views is None:
        views = {}
        d[_VIEWS] = (id(predictor), views)
    own_dict(copy)[_VIEWS] = (id(copy), views)


def _assign(predictor: Any, attr: str, value: Any) -> None:
    """Make ``value`` the predictor's own ``attr``, assigned after bind (so it wins on reads)."""
    d = own_dict(predictor)
    d[f"_dspex_{attr}"] = value
    d["_dspex_assigned"] |= {attr}


# Bound values as read from a predictor are fresh containers; DSPy code that edits them in place
# (SIMBA appends a demo with ``predictor.demos.append``) would edit a copy. These containers make
# themselves the predictor's own value on their first edit, as the edit would in plain DSPy.

_LIST_EDITS = (
    "append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse",
    "__setitem__", "__delitem__", "__iadd__", "__imul__",
)  # fmt: skip
_DICT_EDITS = (
    "__setitem__", "__delitem__", "update", "pop", "popitem", "clear", "setdefault", "__ior__",
)  # fmt: skip


class _Adopting:
    """Base of the adopting containers: ``attr`` names the predictor attribute they become."""

    __slots__ = ()
    attr = ""
    _owner: Any

    def __init__(self, items: Any, owner: Any) -> None:
        super().__init__(items)  # type: ignore[call-arg]
        self._owner = owner

    def _adopt(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            setattr(owner, self.attr, self)


class AdoptedList(_Adopting, list):  # type: ignore[type-arg]
    """Bound demos read from a predictor; the first in-place edit makes them its own demos."""

    __slots__ = ("_owner",)
    attr = "demos"


class AdoptedDict(_Adopting, dict):  # type: ignore[type-arg]
    """A bound predictor's config view; the first in-place edit makes it its own config."""

    __slots__ = ("_owner",)
    attr = "config"


def _adopting(base: type, name: str) -> Callable[..., Any]:
    method = getattr(base, name)

    def edit(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._adopt()
        return method(self, *args, **kwargs)

    edit.__name__ = name
    return edit


for _name in _LIST_EDITS:
    setattr(AdoptedList, _name, _adopting(list, _name))
for _name in _DICT_EDITS:
    setattr(AdoptedDict, _name, _adopting(dict, _name))


class HookedPredictor(Hooked):
    """Mixin placed before a ``Predict`` subclass by :func:`hook_predictor` (see module doc)."""

    @property
    def signature(self) -> Any:
        d = own_dict(self)
        hooks = d["_dspex_hooks"]
        return _read(self, "signature", hooks.instructions, _has_instructions, hooks.suffix)

    @signature.setter
    def signature(self, value: Any) -> None:
        _assign(self, "signature", value)

    @property
    def demos(self) -> Any:
        return _read(self, "demos", own_dict(self)["_dspex_hooks"].demos, _same_demos, None)

    @demos.setter
    def demos(self, value: Any) -> None:
        _assign(self, "demos", value)

    @property
    def config(self) -> Any:
        d = own_dict(self)
        own = d["_dspex_config"]
        names = d["_dspex_hooks"].config_names
        if not names or "config" in d["_dspex_assigned"] or _LOCAL.get():
            return own
        view = d.get("_dspex_config_view")
        if view is None or view[0] is not own or view[1]._owner is None:
            kept = {k: v for k, v in own.items() if k not in names}
            view = (own, AdoptedDict(kept, self))
            d["_dspex_config_view"] = view
        return view[1]

    @config.setter
    def config(self, value: Any) -> None:
        _assign(self, "config", value)

    @property
    def lm(self) -> Any:
        d = own_dict(self)
        own = d["_dspex_lm"]
        hooks = d["_dspex_hooks"]
        if _LOCAL.get() or (hooks.lm is None and not hooks.config):
            return own
        values = call_values()
        probe = hooks.lm or hooks.config[0]
        inside = values is not None and probe.name in values
        if inside and values is not None:
            if own is None and hooks.config:  # the LM in effect (an inner dspy.context's too)
                overlay = thread_local_overrides.get()
                own = overlay["lm"] if "lm" in overlay else main_thread_config.get("lm")
                if own is not None and own is overlay.get(BOUND_LM_KEY):
                    return own  # the boundary's copy: it has the call's LM keywords already
            return None if own is None else _keyed_lm(own, hooks, values)
        return own if own is not None or _DUMPING.get() else _lm_outside(hooks)

    @lm.setter
    def lm(self, value: Any) -> None:
        own_dict(self)["_dspex_lm"] = value

    def _forward_preprocess(self, **kwargs: Any) -> Any:
        """``Predict``'s per-call preprocessing; a per-call ``lm=`` gets the bound keywords.

        Inside a bound call the LM given as ``predictor(..., lm=X)`` runs with the bound LM
        keywords, as the predictor's own ``lm`` does (and as ``config`` gives them in DSPy).
        """
        lm = kwargs.get("lm")
        if lm is not None:
            hooks = own_dict(self)["_dspex_hooks"]
            values = call_values()
            if hooks.config and values is not None:
                kwargs["lm"] = _keyed_lm(lm, hooks, values)
        return super()._forward_preprocess(**kwargs)  # type: ignore[misc]

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        new = super().__deepcopy__(memo)
        if call_values() is not None:
            _share_views(self, new)
        return new

    def __getstate__(self) -> dict[str, Any]:
        raw: Any = super().__getstate__()  # type: ignore[misc]
        state: dict[str, Any] = raw
        state.pop("_dspex_config_view", None)  # caches (a copy builds its own classes)
        state.pop(_VIEWS, None)
        return state

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """DSPy's state with the instructions and demos the predictor runs with, plus its
        variables (``dspex_variables``).

        The signature and demos are the bound values (or the assigned ones, which win), so the
        state loaded into the same program in plain DSPy runs what the bound program runs; the
        ``lm`` is the predictor's own (the bound LM is chosen per call, not saved). The values
        are read once for the whole save (``one_read``), so the fields and the section agree
        while other threads set the variables; a value a call would reject leaves the own one
        in DSPy's field (see ``_DUMPING``).
        """
        variables = hooked_variables(self)
        token = _DUMPING.set(True)
        try:
            with one_read(name for name, _ in variables):  # one version, also in the section
                state: dict[str, Any] = super().dump_state(json_mode=json_mode)  # type: ignore[misc]
                state[SECTION] = dump_variables(variables)
        finally:
            _DUMPING.reset(token)
        own_lm = own_dict(self)["_dspex_lm"]
        state["lm"] = own_lm.dump_state() if own_lm else None
        return state

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> Any:
        """Load DSPy's state, then its saved variables into the current session.

        A loaded signature or demos equal to what the predictor had, or to what its saved
        variables give it (the state of a bound program), leaves the hook to the variable; a
        different one counts as assigned (compiled) and wins.
        """
        state = dict(state)
        section = state.pop(SECTION, None)
        hooks = winning(self)
        declared = {b.name: b.declared for b in hooks.bindings() if b.declared}
        commit = prepare_load(section, declared) if section else None
        saved = section or loading_section()
        d = own_dict(self)
        before = (d["_dspex_signature"], d["_dspex_demos"], d["_dspex_assigned"])
        super().load_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state)  # type: ignore[misc]
        assigned = set(before[2])
        if _same_signature(before[0], d["_dspex_signature"]) or _bound_signature(
            before[0], d["_dspex_signature"], hooks, saved
        ):
            d["_dspex_signature"] = before[0]
        else:
            assigned.add("signature")
        if _same_demos(before[1], d["_dspex_demos"]) or _bound_demos(
            d["_dspex_demos"], hooks, saved
        ):
            d["_dspex_demos"] = before[1]
        else:
            assigned.add("demos")
        d["_dspex_assigned"] = frozenset(assigned)
        if commit is not None:
            commit()
        return self


def _saved_value(binding: Binding | None, saved: Mapping[str, Any] | None) -> Any:
    """The value a saved ``dspex_variables`` section holds for ``binding`` (UNSET if none)."""
    if binding is None or not saved:
        return UNSET
    entry = saved.get(binding.name)
    return entry.get("value", UNSET) if isinstance(entry, Mapping) else UNSET


def _bound_signature(own: Any, loaded: Any, hooks: _Hooks, saved: Any) -> bool:
    """True when ``loaded`` is ``own`` with the saved instructions (a bound program's save)."""
    text = _saved_value(hooks.instructions, saved)
    if not isinstance(text, str):
        return False
    return _same_signature(instructed(own, text, hooks.suffix), loaded)


def _bound_demos(loaded: Any, hooks: _Hooks, saved: Any) -> bool:
    """True when ``loaded`` are the saved demos variable's demos (a bound program's save)."""
    value = _saved_value(hooks.demos, saved)
    if value is UNSET or hooks.demos is None:
        return False
    try:
        return _same_demos(loaded, demos_value(hooks.demos.name, value))
    except BindingError:  # not demos: the loaded ones differ
        return False


def _same_signature(a: Any, b: Any) -> bool:
    try:
        return bool(a.dump_state() == b.dump_state() and a.fields.keys() == b.fields.keys())
    except Exception:  # a signature class that cannot dump itself: treat as changed
        return False


def hooked_variables(predictor: Any) -> list[tuple[str, Variable | None]]:
    """(name, declaration) of every variable bound to ``predictor``."""
    seen: dict[str, Variable | None] = {}
    for b in own_dict(predictor)["_dspex_hooks"].bindings():
        if seen.get(b.name) is None:
            seen[b.name] = b.declared
    return list(seen.items())


# ------------------------------------------------------------------------------------------
# installing the hooks

register_mixin("predictor", HookedPredictor)


def hook_predictor(predictor: Any, layer: Layer) -> None:
    """Install the per-call hooks on ``predictor`` (in place) and add ``layer``'s bindings."""
    d = own_dict(predictor)
    if "_dspex_hooks" not in d:
        for attr in ("signature", "demos", "config", "lm"):
            d[f"_dspex_{attr}"] = d.pop(attr)
        d["_dspex_assigned"] = frozenset()
        d["_dspex_hooks"] = _Hooks(())
        add_kind(predictor, "predictor")
    d["_dspex_hooks"] = _Hooks((*d["_dspex_hooks"].layers, layer))


def assigned_hooks(predictor: Any) -> frozenset[str]:
    """The hooked attributes assigned on ``predictor`` after bind (or edited in place)."""
    d = own_dict(predictor)
    if "_dspex_hooks" in d:
        _settle(predictor, d)
    result: frozenset[str] = d.get("_dspex_assigned", frozenset())
    return result


def release(predictor: Any, hooks: frozenset[str]) -> None:
    """Hand ``hooks`` back to their variables (after :func:`dspex.publish`)."""
    d = own_dict(predictor)
    d["_dspex_assigned"] = d["_dspex_assigned"] - hooks


def winning(predictor: Any) -> _Hooks:
    """The predictor's hooks (which binding wins per hook)."""
    hooks: _Hooks = own_dict(predictor)["_dspex_hooks"]
    return hooks
