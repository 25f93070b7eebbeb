"""Run as a script: open a session in a store, set variables, print what it sees, exit.

    python named_session_target.py ADDRESS OPTIONS_JSON

OPTIONS_JSON holds the ``dspex.Session`` keywords (``session_id``, ``create``, ``keep``,
``ttl``), ``set`` (name -> float value, registered when missing) and ``expect`` (names to wait
for, up to 30 s, inside the session: another process sets them, so the two overlap). Prints
one JSON line: the session id and every variable's value.
"""

from __future__ import annotations

import json
import sys
import time

import dspex

address, options = sys.argv[1], json.loads(sys.argv[2])
values = options.pop("set", {})
expect = set(options.pop("expect", []))
with dspex.Session(address, **options) as session:
    for name, value in values.items():
        session.register(name, float, value)
        session.set(name, value)
    deadline = time.monotonic() + 30
    while not expect <= {r.name for r in session.list()} and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = {record.name: record.value for record in session.list()}
    print(json.dumps({"session_id": session.session_id, "variables": seen}))
