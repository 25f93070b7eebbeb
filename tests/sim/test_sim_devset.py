"""The bundled dev set: one task or all of them, and a misspelt task is an error naming the
tasks there are (it gave an empty dev set)."""

from __future__ import annotations

import pytest

from dspex.errors import DspexError
from dspex.sim import load_devset


def test_a_task_keeps_its_examples_and_an_unknown_task_names_the_known_ones() -> None:
    arithmetic = load_devset("arithmetic")
    assert arithmetic and {example.task for example in arithmetic} == {"arithmetic"}
    assert len(load_devset()) > len(arithmetic)
    with pytest.raises(DspexError, match=r"no task 'arithmetc'; use one of \['arithmetic', "):
        load_devset("arithmetc")
