"""Commits to an SQLiteEngine in a loop, printing each acknowledged commit (kill -9 tests).

Usage: ``python sqlite_writer.py DIR``. Prints ``ready`` once open, then one line
``REVISION VALUE`` per commit after the commit returned. Each commit sets both ``x`` and ``y``
to VALUE, so a torn commit would show as ``x != y`` after a crash. Runs until killed.
"""

from __future__ import annotations

import sys

from dspex._model import EMPTY, make_spec
from dspex.state.engines.contract import Write
from dspex.state.engines.sqlite import SQLiteEngine

SPEC = make_spec(int)


def main(directory: str) -> None:
    engine = SQLiteEngine(directory, history_size=5, log_size=1_000_000)
    engine.create_session("s", ttl=None, owner="writer")
    if engine.get("s", "x") is None:
        engine.commit(
            "s",
            [Write(name, None, "register", SPEC, 0, 1, "writer", EMPTY) for name in ("x", "y")],
        )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        x, y = engine.get("s", "x"), engine.get("s", "y")
        assert x is not None and y is not None
        value = x.value + 1
        writes = [
            Write(r.name, r.revision, "set", SPEC, value, r.version + 1, "writer", EMPTY)
            for r in (x, y)
        ]
        updates = engine.commit("s", writes)
        sys.stdout.write(f"{updates[-1].revision} {value}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
