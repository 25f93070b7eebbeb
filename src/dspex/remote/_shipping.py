"""Layer 3: the DSPy settings a ``dspex.Remote`` ships to its workers, checked before it starts.

Workers configure the LM and adapter that ``dspy.settings`` holds in the parent when the Remote
is created. Each one is pickled here, once; one that cannot be pickled is an error at Remote
creation naming it (and the part of it that cannot travel), never a silent skip that leaves the
workers without an LM ("No LM is loaded") at their first call.
"""

from __future__ import annotations

import sys

from dspex.errors import WorkerSetupError
from dspex.runtime._pickling import describe, dumps, explain_unpicklable

__all__ = ["SHIPPED_SETTINGS", "check_settings_travel", "settings_blob", "travel_blob"]

SHIPPED_SETTINGS = ("lm", "adapter")
"""The ``dspy.settings`` keys the workers get from the parent."""


def settings_blob() -> bytes | None:
    """The parent's configured LM and adapter, pickled for ``dspy.configure`` in each worker.

    Returns:
        The pickled ``{key: value}`` of the settings that are set, or None when none is (or
        DSPy is not loaded).

    Raises:
        WorkerSetupError: a configured LM or adapter cannot be pickled; the message names it.
    """
    dspy = sys.modules.get("dspy")
    if dspy is None:
        return None
    shipped = {key: dspy.settings.get(key) for key in SHIPPED_SETTINGS}
    shipped = {key: value for key, value in shipped.items() if value is not None}
    if not shipped:
        return None
    try:
        return dumps(shipped)
    except Exception as exc:  # pickling raises many types (TypeError, PicklingError, ...)
        for key, value in shipped.items():  # raises, naming the one that cannot travel
            travel_blob(value, f"dspy.settings.{key}")
        raise WorkerSetupError(
            f"dspex.Remote cannot ship dspy.settings {', '.join(shipped)} to its worker "
            f"processes: {type(exc).__name__}: {exc}; nothing was started."
        ) from exc


def check_settings_travel() -> None:
    """Fail now, before anything starts, if the configured LM or adapter cannot be pickled.

    Raises:
        WorkerSetupError: as :func:`settings_blob`.
    """
    settings_blob()


def travel_blob(value: object, where: str) -> bytes:
    """Pickle ``value`` (an LM, an adapter) for worker processes.

    Args:
        value: the object the workers need.
        where: where the parent holds it, for the message (``"dspy.settings.lm"``).

    Raises:
        WorkerSetupError: it cannot be pickled; names ``where``, the object and the failing part.
    """
    try:
        return dumps(value)
    except Exception as exc:  # pickling raises many types (TypeError, PicklingError, ...)
        label = _label(value)
        reason = explain_unpicklable(value, where)
        raise WorkerSetupError(
            f"dspex.Remote cannot ship {where} = {label} to its worker processes: {reason}. "
            "The workers would have no LM. Make it picklable (create live clients, locks or "
            "threads lazily, or give it __getstate__), bind an `lm` variable instead (workers "
            "build the LM from its value), or configure it inside the module; nothing was "
            "started.",
            setting=where,
            value=label,
        ) from exc


def _label(value: object) -> str:
    """``SimLM('dspex/sim')`` for an LM (its model name), else a short repr."""
    model = getattr(value, "model", None)
    if isinstance(model, str):
        return f"{type(value).__name__}({model!r})"
    return describe(value)
