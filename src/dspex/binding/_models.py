"""Layer 3: which LM a bound call uses: model names, LM choices, and bound LM copies.

A bound ``lm`` hook holds a *key*: a model name (``dspex/sim...`` gives the built-in simulation,
anything else ``dspy.LM(name)``), or a key of a :class:`dspex.Choice` that maps keys to configured
``dspy.LM`` objects (``Choice(fast=dspy.LM(..., api_base=...), big=...)``). Only the key is
stored in the session; the objects, with their endpoints, kwargs and keys, stay in the process
(and travel to ``dspex.Remote`` workers inside the pickled module).

Bound LM keywords are applied the way a DSPy user configures them: as ``lm.copy(**kwargs)`` of
the LM in effect (copies are cached, so a call does not copy an LM).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

import dspy

from dspex.errors import BindingError
from dspex.sim import SimLM, is_sim_model

__all__ = ["bound_lm", "keywords_of", "lm_for_key", "resolve_lm", "share_lists"]

_ROLLOUT_KEYS = ("rollout_id", "temperature")
"""What DSPy's own per-call LM copies set (BestOfN, Refine, SIMBA, bootstrap rounds)."""

_LMS: dict[str, Any] = {}
_LMS_LOCK = threading.Lock()


def resolve_lm(name: str) -> Any:
    """Return the LM for a model name (cached: one instance per name and process).

    ``dspex/sim`` and ``dspex/sim-<variant>`` give the built-in :class:`~dspex.sim.SimLM`;
    anything else must read ``provider/model`` (``openai/gpt-4o-mini``, ``hosted_vllm/...``) and
    gives ``dspy.LM(name)``.

    Raises:
        BindingError: ``name`` is not a usable model name.
    """
    lm = _LMS.get(name)
    if lm is not None:
        return lm
    with _LMS_LOCK:
        lm = _LMS.get(name)
        if lm is None:
            lm = _build_lm(name)
            _LMS[name] = lm
    return lm


def _build_lm(name: str) -> Any:
    if is_sim_model(name):
        return SimLM(name)
    problem = "" if _MODEL_NAME.fullmatch(name) else "it is not of the form 'provider/model'"
    if not problem:
        try:
            return dspy.LM(name)
        except Exception as exc:  # dspy.LM raises several kinds; one clear error here
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
    raise BindingError(
        f"model name {name!r} cannot be turned into an LM: {problem}; use 'provider/model' "
        "(e.g. 'openai/gpt-4o-mini'), a 'dspex/sim' name, or bind a dspex.Choice that maps "
        "keys to configured LMs (dspex.Choice(fast=dspy.LM(...)))",
        model=name,
    )


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/\S+")


def lm_for_key(key: Any, models: Mapping[str, Any] | None) -> Any:
    """The LM a bound ``lm`` value selects: from the choice's ``models``, else by name.

    Raises:
        BindingError: the key is not a string, or not a usable model name.
    """
    if models:
        lm = models.get(key)
        if lm is not None:
            return lm
    if not isinstance(key, str) or not key:
        raise BindingError(
            f"the bound lm value {key!r} is not a model name or choice key", key=key
        )
    return resolve_lm(key)


_COPIES: dict[tuple[int, tuple[tuple[str, Any], ...]], tuple[Any, Any, dict[str, Any]]] = {}
_COPIES_LOCK = threading.Lock()
_MAX_COPIES = 512


def _copy(lm: Any, kwargs: dict[str, Any]) -> Any:
    """``lm.copy(**kwargs)`` sharing ``lm``'s history and callbacks, cached per (LM, kwargs).

    The copy is never seen by the user, so it is ``lm`` to them: its calls are recorded in
    ``lm.history`` (what ``lm.inspect_history()`` shows) and reach the callbacks in
    ``lm.callbacks``, also ones added later, and keywords edited in ``lm.kwargs`` later reach
    it, as DSPy does for calls with keywords in a predictor's ``config``. Cached, so a call
    copies nothing.
    """
    try:
        key = (id(lm), tuple(sorted(kwargs.items())))
        hash(key)
    except TypeError:  # an unhashable kwarg value (a dict, a list): copy every time
        return share_lists(lm, lm.copy(**kwargs))
    entry = _COPIES.get(key)
    if entry is not None and entry[0] is lm and entry[2] == lm.kwargs:
        return share_lists(lm, entry[1])  # lm's lists may have been replaced since
    made = share_lists(lm, lm.copy(**kwargs))
    with _COPIES_LOCK:
        if len(_COPIES) >= _MAX_COPIES:
            _COPIES.clear()
        # holding lm keeps id(lm) from being reused while cached; a copy of lm's keywords
        # tells when they were edited since (lm.kwargs["top_p"] = ...): then copy again
        _COPIES[key] = (lm, made, dict(lm.kwargs))
    return made


_SHARED = ("history", "callbacks")


def share_lists(lm: Any, made: Any) -> Any:
    """Point ``made`` (a copy of ``lm``) at ``lm``'s ``history`` and ``callbacks`` lists.

    Called again whenever a cached copy is handed out, since the user may have replaced
    ``lm.history`` or ``lm.callbacks`` (``lm.history = []``) in the meantime.
    """
    if made is lm:
        return made
    for attr in _SHARED:
        own = getattr(lm, attr, None)
        if isinstance(own, list) and getattr(made, attr, None) is not own:
            setattr(made, attr, own)
    return made


def bound_lm(current: Any, chosen: Any, config: Mapping[str, Any], configured: Any) -> Any:
    """The LM a bound call runs with: ``(chosen or current).copy(**config)``.

    Args:
        current: the LM in effect (``dspy.settings.lm``) where the bound module is called.
        chosen: the LM a bound ``lm`` hook selected, or None.
        config: the bound LM keywords.
        configured: the LM configured with ``dspy.configure`` (the process-wide default).

    When ``current`` is a rollout copy DSPy made itself (it carries a ``rollout_id`` and is not
    the configured LM: BestOfN, Refine, SIMBA and bootstrap rounds make these), its
    ``rollout_id`` and ``temperature`` keep precedence over bound ones, exactly as when the
    bound values had been configured before DSPy made the copy.
    """
    base = chosen if chosen is not None else current
    if base is None:
        return None
    if keywords_of(base) is None:  # not an LM (a model name string ...): DSPy's error names it
        return base
    kwargs = dict(config)
    if current is not None and current is not configured:
        own = getattr(current, "kwargs", None) or {}
        if own.get("rollout_id") is not None:
            for key in _ROLLOUT_KEYS:
                if key in own:
                    kwargs[key] = own[key]
                else:
                    kwargs.pop(key, None)
    if not kwargs:
        return base
    if all(base.kwargs.get(k, _MISSING) == v for k, v in kwargs.items()):
        return base
    return _copy(base, kwargs)


_MISSING = object()


def keywords_of(lm: Any) -> dict[str, Any] | None:
    """``lm.kwargs``; None when ``lm`` has none, so it is not an LM that takes keywords.

    Such a value (``lm="openai/gpt-4o-mini"``, a string where DSPy expects an LM object) is
    handed to DSPy unchanged, and ``Predict`` raises its own error naming the mistake.
    """
    kwargs = getattr(lm, "kwargs", None)
    return kwargs if isinstance(kwargs, dict) else None
