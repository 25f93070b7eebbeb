"""A ``dspex.Remote`` parent in its own process (so a test can ``kill -9`` it): two spawned
workers each start a call that writes a marker file named after its pid into MARKERS and then
sleeps for two minutes. Once both calls run, it prints the worker pids and waits to be killed.

Usage: python remote_parent.py MARKERS
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from fault_targets import SleepsLong

import dspex

WORKERS = 2


def main(markers: str) -> None:
    with dspex.Session(), dspex.Remote(SleepsLong(), workers=WORKERS, progress=False) as remote:
        calls = [{"markers": markers}] * WORKERS
        threading.Thread(target=remote.map, args=(calls,), daemon=True).start()
        while len(list(Path(markers).iterdir())) < WORKERS:
            time.sleep(0.05)
        print(*remote.pids, flush=True)
        time.sleep(300)


if __name__ == "__main__":
    main(sys.argv[1])
