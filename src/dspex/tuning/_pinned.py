"""Layer 3 (tuning): run code with one trial's values, whatever the session holds meanwhile.

Concurrent trials of one study cannot all be "the current value" of a variable: each trial
writes its values to the session (so they are versioned, watched and visible), and another
trial's write may land while the first is still being evaluated. So every evaluation runs in a
*pinned* view of the session: a :class:`dspex.Session` joined over a provider that answers reads
of the tuned variables with the exact records the trial's own write produced (same value,
version and revision) and passes everything else to the real provider. Bound DSPy modules read
through ``current_session()``, so they see the trial's values; no module is mutated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping
from typing import Any, cast

from dspex._model import VariableRecord
from dspex.session import Session, current_session
from dspex.state import StateProvider

__all__ = ["PinnedProvider", "pinned"]


class PinnedProvider:
    """A provider that serves ``records`` for their names and delegates everything else.

    Args:
        inner: the session's real provider.
        records: name -> the record a trial's write produced.
    """

    def __init__(self, inner: StateProvider, records: Mapping[str, VariableRecord]) -> None:
        self.inner = inner
        self.records = dict(records)

    def get_variable(self, session_id: str, name: str) -> VariableRecord:
        """The pinned record of ``name``, else the real one."""
        record = self.records.get(name)
        return record if record is not None else self.inner.get_variable(session_id, name)

    def get_variables(self, session_id: str, names: Collection[str]) -> dict[str, VariableRecord]:
        """Pinned records for pinned names, one real read for the rest."""
        rest = [n for n in names if n not in self.records]
        found = self.inner.get_variables(session_id, rest) if rest else {}
        return {n: self.records[n] if n in self.records else found[n] for n in names}

    def close(self) -> None:
        """Nothing to release: the real provider belongs to the session."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.contextmanager
def pinned(records: Mapping[str, VariableRecord]) -> Iterator[Session]:
    """Make a view of the current session with ``records`` pinned current inside the block."""
    session = current_session()
    provider = cast(StateProvider, PinnedProvider(session.provider, records))
    with Session(provider, session_id=session.session_id) as view:
        yield view
