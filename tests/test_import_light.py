"""``import dspex`` and a local session round trip load neither grpc nor dspy (fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import dspex

    after_import = sorted(sys.modules)
    with dspex.Session() as session:
        session.register("temperature", float, 0.7, min=0.0, max=2.0)
        session.register("demos", "json", [{"q": "a"}])
        with session.watch("temperature") as updates:
            session.set("temperature", 0.2)
            update = updates.poll(timeout=5)
        session.update({"temperature": 0.3})
        session.rollback("temperature", 1)
        value = session.get("temperature")
        history = [r.value for r in session.history("temperature")]
    print(json.dumps({
        "after_import": after_import,
        "after_session": sorted(sys.modules),
        "value": value,
        "history": history,
        "watched": update.record.value,
    }))
    """
)

HEAVY = ("grpc", "dspy", "litellm", "dspex._proto")


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_and_local_session_stay_light() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["value"] == 0.7
    assert result["history"] == [0.7, 0.2, 0.3, 0.7]
    assert result["watched"] == 0.2
    assert "dspex" in result["after_import"]
    assert heavy(result["after_import"]) == []
    assert heavy(result["after_session"]) == []
