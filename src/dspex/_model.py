"""Pure value model shared by every layer: specs, validation and immutable records.

No I/O and no locks live here. The model is three modules: :mod:`dspex._spec` (types,
constraints, read-only containers), :mod:`dspex._validate` (the one ``validate`` function every
backend uses) and this one (records), which re-exports the other two so callers import from one
place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from dspex._spec import (
    EMPTY,
    TYPES,
    Choice,
    FrozenDict,
    FrozenList,
    VariableSpec,
    freeze,
    make_spec,
    normalize_type,
    type_name,
)
from dspex._validate import plain_metadata, validate

__all__ = [
    "EMPTY",
    "TYPES",
    "BatchMark",
    "Choice",
    "FrozenDict",
    "FrozenList",
    "SessionInfo",
    "VariableRecord",
    "VariableSpec",
    "VariableUpdate",
    "freeze",
    "make_spec",
    "normalize_type",
    "plain_metadata",
    "type_name",
    "validate",
]


class VariableRecord(NamedTuple):
    """An immutable snapshot of one variable at one version.

    A NamedTuple rather than a frozen dataclass: a record is built on every write, and tuple
    construction is several times cheaper, which keeps a validated local set under 2 us.

    ``revision`` is the session revision at which this version was written; ``stale`` marks a
    downstream variable whose upstream changed since it was last written; ``lock`` describes the
    optimization lock holding the variable, if any.
    """

    name: str
    spec: VariableSpec
    value: Any
    version: int
    revision: int
    updated_at: float
    writer: str = ""
    metadata: Mapping[str, Any] = EMPTY
    stale: bool = False
    lock: Mapping[str, Any] | None = None

    @property
    def type(self) -> str:
        """The variable's type name."""
        return self.spec.type

    @property
    def constraints(self) -> Mapping[str, Any]:
        """The variable's constraints."""
        return self.spec.constraints


class BatchMark(NamedTuple):
    """Marks a watch update written by one applied atomic ``update_variables``.

    ``first`` and ``last`` are the session revisions the batch wrote (consecutive); ``end`` is
    true on the last update of the batch that this watcher receives (its name filter may skip
    others), so a watcher that must never show half a batch buffers until ``end``.
    """

    first: int
    last: int
    end: bool


class VariableUpdate(NamedTuple):
    """One change delivered by a watch, in session revision order.

    ``kind`` is ``"initial"`` (current value sent when a watch starts), ``"register"``,
    ``"set"``, ``"delete"``, ``"rollback"``, ``"stale"`` or ``"lock"``. ``record`` is the
    variable after the change (its last record for ``"delete"``).
    """

    revision: int
    kind: str
    name: str
    record: VariableRecord
    batch: BatchMark | None = None
    """Set on the live updates of one applied atomic batch (see :class:`BatchMark`)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A summary of one session in a store."""

    session_id: str
    created_at: float
    revision: int
    variable_count: int
    last_heartbeat: float
    ttl: float | None = None
    owner: str = ""
