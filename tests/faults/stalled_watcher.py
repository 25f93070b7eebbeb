"""A watcher in its own process (so a test can SIGSTOP it): watches SESSION at ADDRESS on a
dedicated stream, prints ``WATCHING``, and reads until variable ``done`` changes or the watch
ends. Then it prints ``GOT count first last in_order`` and, if an error ended the watch,
``ENDED ErrorClass resume_from``.

Usage: python stalled_watcher.py ADDRESS SESSION
"""

from __future__ import annotations

import sys

from dspex import errors
from dspex.state.store import SessionStoreProvider


def main(address: str, session_id: str) -> None:
    client = SessionStoreProvider(address, timeout=10.0)
    head = client.get_session(session_id).revision
    watch = client.watch_variables(session_id, after_revision=head)
    print("WATCHING", flush=True)
    got: list[int] = []
    ended = ""
    try:
        for update in watch:
            got.append(update.revision)
            if update.name == "done":
                break
    except errors.DspexError as exc:
        ended = f"ENDED {type(exc).__name__} {exc.details.get('resume_from')}"
    in_order = got == list(range(head + 1, head + 1 + len(got)))
    print("GOT", len(got), got[0] if got else head, got[-1] if got else head, in_order, flush=True)
    if ended:
        print(ended, flush=True)
    client.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
