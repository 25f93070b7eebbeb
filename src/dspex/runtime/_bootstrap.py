"""Layer 1 runtime: can a spawned worker start this program at all?

Workers are started with ``spawn``: before any dspex code runs in a worker, ``multiprocessing``
re-imports the parent's main module there (as ``__mp_main__``), so that functions and classes
defined in it unpickle. Two common programs make that import fail, and the worker then dies
before it can report anything, leaving only a traceback on its stderr:

- a main module read from standard input (``python - < script.py``): there is no file to
  re-import, which :func:`check_main_module` refuses before any process is spawned;
- a script that creates the pool (or a ``dspex.Remote``) at import time, without an
  ``if __name__ == "__main__":`` guard: the re-import would create a pool inside the worker,
  which ``multiprocessing`` forbids. Only the worker can see that, so the pool explains it
  (:data:`NEVER_STARTED`) when a worker exits without having said it started.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import process
from typing import Final

from dspex.errors import WorkerSetupError

__all__ = ["NEVER_STARTED", "check_main_module"]

NEVER_STARTED: Final = (
    "before its dspex code ran: it most likely could not import this program's main module, "
    "which every spawned worker re-imports (its traceback is on the worker's stderr). Create "
    'the pool or Remote under `if __name__ == "__main__":` (or inside a function called '
    "from there), and run the program from a file or with `python -m`, not from stdin"
)
"""Added to the setup failure of a worker that exited before its entry point reported."""


def check_main_module() -> None:
    """Refuse to spawn workers when the main module has no file they could re-import.

    Raises:
        WorkerSetupError: the main module names a file that does not exist (``<stdin>``).
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return  # run with -m: workers import it by name
    path = getattr(main, "__file__", None)
    if not isinstance(path, str):
        return  # interactive or -c: workers re-import nothing
    # resolved as the spawn start method does: against the directory at multiprocessing's import
    full = os.path.join(getattr(process, "ORIGINAL_DIR", None) or os.getcwd(), path)
    if not os.path.isfile(full):
        raise WorkerSetupError(
            f"worker processes cannot be started from this program: its main module "
            f"{path!r} is not a file, and every spawned worker re-imports the main module "
            "(functions and classes defined there travel by reference). Save the program to a "
            "file and run it (`python script.py` or `python -m package.module`)."
        )
