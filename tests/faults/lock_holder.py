"""A lock holder in its own process (so a test can SIGSTOP it): joins SESSION at ADDRESS,
holds the optimization lock on ``counter`` with a 2 s lease, and for every line on stdin reads
the counter and writes it plus one, printing ``WROTE n``; a refused write prints ``REFUSED``
with the error, then what the lock object says (``lock.check()``), and ends the block.

Usage: python lock_holder.py ADDRESS SESSION
"""

from __future__ import annotations

import sys

import dspex
from dspex import errors

LEASE = 2.0


def main(address: str, session_id: str) -> None:
    session = dspex.Session(store=address, session_id=session_id)
    with session.optimizing("counter", optimizer_id="holder", lease=LEASE) as lock:
        print("HELD", flush=True)
        for _line in sys.stdin:
            value = session.get("counter")
            try:
                session.set("counter", value + 1)
            except errors.LockedError as exc:
                print(f"REFUSED lost={exc.details.get('lost')} {exc}", flush=True)
                try:
                    lock.check()
                    print("CHECK ok", flush=True)
                except errors.LockedError as lost:
                    print(f"CHECK lost {sorted(lock.lost)} {lost}", flush=True)
                break
            print(f"WROTE {value + 1}", flush=True)
    session.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
