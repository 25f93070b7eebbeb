"""Run as a script: a session entered before ``import dspy`` reaches DSPy's thread pools.

Prints one JSON line: for ``dspy.Parallel`` and ``Evaluate(num_threads=4)``, the session each
item saw (True when it was the session entered here), the temperature the LM got, and how many
which threads ran the items.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import dspex

assert "dspy" not in sys.modules, "this check needs a process where dspy is not loaded yet"

with dspex.Session() as session:
    import dspy

    seen: list[tuple[int, bool, float | None]] = []
    lock = threading.Lock()

    class Recorder(dspy.utils.callback.BaseCallback):  # type: ignore[misc]
        """Records, per LM call, its thread and whether it ran in ``session``."""

        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            with lock:
                in_session = dspex.current_session() is session
                # A bound temperature travels on the LM copy, as plain DSPy's lm.copy(...) does.
                kwargs = {**instance.kwargs, **inputs["kwargs"]}
                temperature = kwargs.get("temperature")
                seen.append((threading.get_ident(), in_session, temperature))

    class QA(dspex.Program):
        temperature = dspex.Variable(float, 0.3, min=0.0, max=2.0)

        def __init__(self) -> None:
            super().__init__()
            self.answer = dspex.bind(
                dspy.Predict("question -> answer"), temperature=QA.temperature
            )

        def forward(self, question: str) -> Any:
            return self.answer(question=question)

    dspy.configure(lm=dspex.SimLM("dspex/sim-large"), callbacks=[Recorder()])
    program = QA()
    session.set("temperature", 0.6)
    examples = [
        dspy.Example(question=f"What is {i} + {i}?", answer=str(2 * i)).with_inputs("question")
        for i in range(8)
    ]
    report: dict[str, Any] = {"main_thread": threading.get_ident()}
    parallel = dspy.Parallel(num_threads=4, provide_traceback=True)
    outputs = parallel([(program, example) for example in examples])
    report["parallel"] = {
        "answers": sum(1 for o in outputs if o is not None),
        "calls": list(seen),
    }
    seen.clear()
    evaluate = dspy.Evaluate(
        devset=examples, num_threads=4, display_progress=False, provide_traceback=True
    )
    evaluate(program, metric=lambda example, prediction, trace=None: prediction is not None)
    report["evaluate"] = {"calls": list(seen)}
    print(json.dumps(report))
