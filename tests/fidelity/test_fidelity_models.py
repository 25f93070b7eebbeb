"""LM choice over configured LM objects; only keys reach the store; bad names fail clearly."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils.callback import BaseCallback

import dspex
from dspex.errors import BindingError, WorkerSetupError
from dspex.sim import SimLM

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-secret-value-123"


class Instances(BaseCallback):
    """Records which LM object each call went to, with the kwargs it sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls.append((instance, {**instance.kwargs, **(inputs.get("kwargs") or {})}))


def test_a_choice_maps_keys_to_configured_lm_objects(tmp_path: Path) -> None:
    sim = SimLM("dspex/sim")
    local = dspy.LM(  # a real endpoint configured in code: nothing listens on port 9
        "openai/local-model",
        api_base="http://127.0.0.1:9/v1",
        api_key=SECRET,
        max_tokens=321,
        num_retries=0,
        cache=False,
    )
    model = dspex.Variable(dspex.Choice(sim=sim, local=local), "sim", name="m_lm")
    temperature = dspex.Variable(float, 0.4, name="m_temperature", min=0.0, max=2.0)
    seen = Instances()
    dspy.configure(callbacks=[seen])  # no LM configured: the choice provides it
    with dspex.Session() as session:
        program = dspex.bind(dspy.Predict("question -> answer"), lm=model, temperature=temperature)
        program(question="What is 2 + 2?")
        session.set("m_lm", "local")
        with pytest.raises(Exception, match=r"(?i)connect"):  # it really called the endpoint
            program(question="What is 2 + 2?")
        record = session.variable("m_lm")
        assert record.spec.constraints["choices"] == ("sim", "local")
        assert record.value == "local"
        program.save(tmp_path / "saved.json")
        stored = json.dumps([r.spec.to_json() for r in session.list()]) + repr(session.list())
    assert seen.calls[0][0].model == "dspex/sim"
    assert seen.calls[0][1]["temperature"] == 0.4
    used, kwargs = seen.calls[1]
    assert used is local or used.kwargs == {**local.kwargs, "temperature": 0.4}
    assert used.model == "openai/local-model"
    assert kwargs["max_tokens"] == 321 and kwargs["temperature"] == 0.4
    assert SECRET not in stored
    assert SECRET not in (tmp_path / "saved.json").read_text()


@pytest.mark.parametrize("name", ["not a model", "nonsense"])
def test_a_bad_model_name_raises_the_documented_binding_error(name: str) -> None:
    model = dspex.Variable(str, name, name="m_bad")
    with dspex.Session():
        program = dspex.bind(dspy.Predict("question -> answer"), lm=model)
        with pytest.raises(BindingError, match="provider/model"):
            program(question="What is 2 + 2?")


def test_a_choice_of_model_names_still_works() -> None:
    model = dspex.Variable(
        dspex.Choice("dspex/sim", "dspex/sim-large"), "dspex/sim-large", name="m_n"
    )
    seen = Instances()
    dspy.configure(callbacks=[seen])
    with dspex.Session():
        dspex.bind(dspy.Predict("question -> answer"), lm=model)(question="What is 2 + 2?")
    assert seen.calls[0][0].model == "dspex/sim-large"


class HeldLM(SimLM):
    """A simulation LM holding a live object (a lock), so it cannot be pickled."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.lock = threading.Lock()


def test_a_choice_lm_that_cannot_travel_is_named_when_the_remote_is_created() -> None:
    choice = dspex.Choice(ok=SimLM("dspex/sim"), held=HeldLM("dspex/sim-large"))
    model = dspex.Variable(choice, "ok", name="m_travel")
    with dspex.Session():
        program = dspex.bind(dspy.Predict("question -> answer"), lm=model)
        with pytest.raises(WorkerSetupError, match=r"choice 'held' of variable 'm_travel'"):
            dspex.Remote(program, workers=1)
