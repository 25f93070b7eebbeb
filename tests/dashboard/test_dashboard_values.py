"""How the page shows each type of value: numbers plot on a numeric axis, everything else as
labelled categories; long values are shortened, and huge ones travel as text only."""

from __future__ import annotations

import json

import numpy as np

import dspex
from dspex.dashboard._feed import page_record
from dspex.dashboard._values import LABEL_CHARS, MAX_VALUE_CHARS, display, json_text


def test_numbers_have_a_plot_value_and_other_types_only_labels() -> None:
    assert display("float", 0.25) == {
        "label": "0.25",
        "text": "0.25",
        "number": 0.25,
        "value": 0.25,
    }
    assert display("integer", 3)["number"] == 3
    for type_name, value, label in (
        ("boolean", True, "true"),
        ("choice", "dspex/sim", "dspex/sim"),
        ("json", [{"q": "a"}], '[{"q": "a"}]'),
        ("embedding", [0.5, 1.0], "[0.5, 1.0]"),
    ):
        shown = display(type_name, value)
        assert (shown["label"], shown["number"], shown["value"]) == (label, None, value)


def test_long_values_are_shortened_and_huge_ones_sent_as_text_only() -> None:
    prompt = "Answer carefully. " * 10
    shown = display("string", prompt)
    assert len(shown["label"]) == LABEL_CHARS and shown["label"].endswith("\u2026")
    assert prompt.startswith(shown["label"][:-1]) and shown["value"] == prompt
    huge = display("json", list(range(MAX_VALUE_CHARS)))
    assert huge["value"] is None and huge["text"].startswith("[0, 1, 2")


def test_a_tensor_record_becomes_plain_json_for_the_page() -> None:
    with dspex.Session() as session:
        record = session.register("weights", "tensor", np.zeros((2, 2)), shape=[2, 2])
    page = page_record(record)
    assert page["value"] == [[0.0, 0.0], [0.0, 0.0]] and page["number"] is None
    assert (page["name"], page["version"], page["stale"], page["lock"]) == (
        "weights",
        1,
        False,
        None,
    )


def test_progress_that_is_not_a_number_reaches_the_page_as_null() -> None:
    with dspex.Session() as session:
        session.register("temperature", float, 0.7)
        with session.optimizing("temperature", optimizer_id="grid") as lock:
            lock.report(iteration=1, score=float("nan"), best_score=float("-inf"))
            message = {"type": "variable", "record": page_record(session.variable("temperature"))}
    text = json_text(message)
    assert "NaN" not in text and "Infinity" not in text
    progress = json.loads(text)["record"]["lock"]["progress"]
    assert progress == {"iteration": 1, "score": None, "best_score": None}
