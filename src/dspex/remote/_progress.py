"""Layer 3: the progress bars ``dspex.Remote`` shows (workers starting, ``map``) when stdout is
a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressOption", "progress_callback"]

ProgressOption = bool | Callable[[int, int], None] | None
"""``None``: a bar when stdout is a terminal; ``True``/``False``: always/never; or a callback
``progress(done, total)``."""


@contextlib.contextmanager
def progress_callback(
    option: ProgressOption, description: str
) -> Iterator[Callable[[int, int], None] | None]:
    """Yield the ``progress(done, total)`` callback for ``option`` (None: no reporting).

    A rich bar is drawn on stdout while the block runs when ``option`` is True, or None and
    stdout is a terminal; it is removed from the screen afterwards. Under another live display
    (e.g. a Remote started inside an optimizer's bar) it is nested in it; a rich too old to
    nest them yields None instead.
    """
    if callable(option):
        yield option
        return
    show = sys.stdout.isatty() if option is None else bool(option)
    if not show:
        yield None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    try:
        bar.start()
    except LiveError:  # an older rich draws one live display at a time: the one already shown
        yield None
        return
    try:
        yield update
    finally:
        bar.stop()
