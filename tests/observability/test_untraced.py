"""Without tracing set up, nothing loads OpenTelemetry or prometheus_client (fresh process).

A store server and client, a bound module call and a ``dspex.Remote``-free session round trip
all run untraced: ``import dspex`` and the store must not import either optional extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import dspy
    import dspex
    from dspex.state import LocalProvider
    from dspex.state.store import StoreServer

    provider = LocalProvider()
    server = StoreServer.start(provider, "127.0.0.1:0")
    temperature = dspex.Variable(float, 0.7, name="temperature")
    with dspex.Session(store=server.address) as session:
        qa = dspex.bind(dspy.Predict("question -> answer"), temperature=temperature)
        with dspy.context(lm=dspex.SimLM("dspex/sim")):
            answer = qa(question="What is DSPy?").answer
        session.set("temperature", 0.2)
        value = session.get("temperature")
    server.stop()
    provider.close()
    loaded = [m for m in sys.modules if m.split(".")[0] in ("opentelemetry", "prometheus_client")]
    print(json.dumps({"loaded": loaded, "value": value, "answered": bool(answer)}))
    """
)


def test_an_untraced_process_never_loads_the_optional_extras() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"loaded": [], "value": 0.2, "answered": True}
