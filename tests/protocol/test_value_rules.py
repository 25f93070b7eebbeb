"""Language-neutral value rules: pattern dialect, canonical JSON length, int64, dtype spelling.

The ECMAScript side is a real Node.js process (tests/protocol/node/value_rules.js), so the
rules are checked against another language rather than against themselves.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dspex import errors
from dspex._canonical import canonical_json, es_number
from dspex._model import make_spec, validate

NODE_ORACLE = Path(__file__).parent / "node" / "value_rules.js"

PORTABLE = {
    r"[a-z]+": ["abc", "", "abC", "é"],
    r"\w+": ["word_1", "é", "wörd", "x"],
    r"\d{2,3}": ["12", "123", "1234", "٣٣"],
    r"(?:ab|cd)*?x": ["abcdx", "x", "abx", "ab"],
    r"a.c": ["abc", "a\nc", "ac"],
    r"[^\s,]+\.txt": ["notes.txt", "a b.txt", ".txt"],
    r"\x41[\-+]?\d": ["A-1", "A+2", "A3", "A--3"],
    r"\bfoo\b.*": ["foo bar", "foobar"],
    r"(a|b){3}": ["aba", "ab", "abab"],
    r"[\]\[]\{\}\/": ["]{}/", "[{}/", "x{}/"],
}

REFUSED = {
    r"(?P<w>\w+)": "only (?:...) groups",
    r"(?<w>\w+)": "only (?:...) groups",
    r"(?=a)a": "only (?:...) groups",
    r"(?i)abc": "only (?:...) groups",
    r"(a)\1": "backreferences",
    r"\p{L}+": "Unicode property",
    r"\Aabc": r"\A is not portable",
    r"a{,3}": "must start {n}",
    r"a{2000}": "above 1000",
    r"a++": "possessive",
    r"[]a]": "leading ']'",
    r"[[a]": "inside a class",
    r"a]": "must be escaped",
    r"\uFFFF": r"\u escapes",
    r"[\b]": "inside a class",
    r"\q": "not portable",
    r"*a": "must follow",
    "abc\\": "lone backslash",
    r"[a-z": "not closed",
}


def node(request: dict[str, Any]) -> dict[str, Any]:
    """Ask the Node.js oracle; the test needs node on PATH (Makefile test-deps)."""
    exe = shutil.which("node")
    assert exe is not None, "node is not installed: run `make test-deps`"
    done = subprocess.run(
        [exe, str(NODE_ORACLE)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def python_matches(pattern: str, text: str) -> bool:
    spec = make_spec(str, pattern=pattern)
    try:
        validate(spec, text)
    except errors.VariableValueError:
        return False
    return True


def test_portable_patterns_match_the_same_strings_in_python_and_ecmascript() -> None:
    answer = node({"patterns": list(PORTABLE.items()), "numbers": [], "values": []})
    for (pattern, texts), js in zip(PORTABLE.items(), answer["matches"], strict=True):
        assert [python_matches(pattern, t) for t in texts] == js, pattern


def test_word_and_digit_classes_are_ascii() -> None:
    # Python re alone would say True for both (Unicode \w and \d); the dialect says ASCII.
    assert not python_matches(r"\w+", "é")
    assert not python_matches(r"\d+", "٣")


@pytest.mark.parametrize(("pattern", "reason"), sorted(REFUSED.items()))
def test_non_portable_patterns_are_refused_at_register_time(pattern: str, reason: str) -> None:
    with pytest.raises(errors.PatternError, match=re.escape(reason)) as caught:
        make_spec("module", pattern=pattern)
    assert "docs/protocol.md" in str(caught.value) or "regular expression" in str(caught.value)


def test_json_max_length_counts_the_canonical_text() -> None:
    # 14 characters compact; Python's json.dumps writes 17 (spaces after ':' and ',').
    value = {"ab": [1, 2, 3]}
    assert canonical_json(value) == '{"ab":[1,2,3]}'
    assert validate(make_spec("json", max_length=14), value) == value
    with pytest.raises(errors.VariableValueError, match="canonical JSON"):
        validate(make_spec("json", max_length=13), value)
    # Non-ASCII text counts code points, unescaped; keys are sorted (RFC 8785).
    assert canonical_json({"é": "日本", "a": None}) == '{"a":null,"é":"日本"}'


def test_numbers_are_written_as_ecmascript_writes_them() -> None:
    rng = random.Random(11)
    numbers = [
        1.0,
        -0.0,
        0.5,
        1e21,
        1e20,
        1e-7,
        1.5e-6,
        123.456,
        2.0**53,
        5e-324,
        1.7976931348623157e308,
    ]
    numbers += [rng.uniform(-1e6, 1e6) for _ in range(50)]
    numbers += [rng.random() * 10.0 ** rng.randint(-30, 30) for _ in range(100)]
    answer = node({"patterns": [], "numbers": numbers, "values": []})
    assert [es_number(x) for x in numbers] == answer["numbers"]


def test_canonical_length_equals_ecmascript_length() -> None:
    rng = random.Random(7)

    def value(depth: int) -> Any:
        pick = rng.randrange(7 if depth < 3 else 5)
        if pick == 0:
            return rng.choice([None, True, False])
        if pick == 1:
            return rng.randint(-(2**53), 2**53)  # exact in a JavaScript number
        if pick == 2:
            return rng.random() * 10.0 ** rng.randint(-25, 25)
        if pick in (3, 4):
            return "".join(rng.choice('ab"\\\n\x01é日😀 ') for _ in range(rng.randrange(6)))
        if pick == 5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{rng.randrange(9)}é": value(depth + 1) for _ in range(rng.randrange(4))}

    values = [value(0) for _ in range(200)]
    answer = node({"patterns": [], "numbers": [], "values": values})
    assert [len(canonical_json(v)) for v in values] == answer["lengths"]


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64 + 1])
def test_integers_beyond_int64_are_refused(value: int) -> None:
    with pytest.raises(errors.VariableValueError, match="64-bit"):
        validate(make_spec(int), value)
    with pytest.raises(errors.VariableValueError, match="64-bit"):
        validate(make_spec("json"), {"nested": [value]})
    with pytest.raises(errors.ConstraintError, match="64-bit"):
        make_spec("choice", choices=[1, value])


def test_int64_bounds_are_accepted() -> None:
    for value in (2**63 - 1, -(2**63)):
        assert validate(make_spec(int), value) == value
        assert validate(make_spec("json"), [value]) == [value]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("float64", "float64"), ("d", "float64"), (">f8", "float64"), ("<i4", "int32"),
     (np.uint8, "uint8"), (np.dtype(">c16"), "complex128"), (bool, "bool")],
)  # fmt: skip
def test_dtype_constraint_has_one_canonical_spelling(given: Any, canonical: str) -> None:
    assert make_spec("tensor", dtype=given).constraints["dtype"] == canonical


@pytest.mark.parametrize("given", [np.longdouble, "U5", "object", "no-such-dtype"])
def test_dtypes_without_a_portable_name_are_refused(given: Any) -> None:
    if np.dtype(np.longdouble).itemsize == 8 and given is np.longdouble:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(errors.ConstraintError, match="dtype"):
        make_spec("tensor", dtype=given)


ARRAY_DETAIL = {"dtype": "float32", "shape": [2, 3]}


@pytest.mark.parametrize(
    ("value", "spec", "detail"),
    [
        ("yes", make_spec(bool), "yes"),
        (5, make_spec(float, max=1.0), 5),
        ([1, 2, 3], make_spec("embedding", dimensions=2), [1, 2, 3]),
        (np.zeros((2, 3), np.float32), make_spec("tensor", shape=[3, 2]), ARRAY_DETAIL),
        ({1, 2}, make_spec("json"), "{1, 2}"),
    ],
)  # fmt: skip
def test_error_details_carry_plain_json_values(value: Any, spec: Any, detail: Any) -> None:
    with pytest.raises(errors.VariableValueError) as caught:
        validate(spec, value, "v")
    assert caught.value.details["value"] == detail
    json.dumps(caught.value.details, allow_nan=False)  # every detail is plain JSON


def test_tensor_values_of_a_dtype_without_a_portable_name_are_refused() -> None:
    if np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(errors.VariableTypeError, match="portable dtype"):
        validate(make_spec("tensor"), np.zeros(2, np.longdouble))
    assert validate(make_spec("tensor"), np.zeros(2, ">f8")).dtype.name == "float64"


def test_an_unknown_type_name_is_a_plain_detail() -> None:
    with pytest.raises(errors.ConstraintError) as caught:
        make_spec("map")
    assert caught.value.details["type"] == "map"  # not the repr "'map'"
