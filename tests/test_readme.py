"""The README's Python examples run as written and print what their comments promise (docs that
match the code): a line ``print(EXPR)  # -> VALUE`` must print exactly ``VALUE``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
PROMISE = re.compile(r"^(?P<indent>\s*)print\((?P<expr>.*)\)\s*# -> (?P<value>.+?)\s*$")
CHECK = """
def __promised(expected, line, *values):
    printed = " ".join(str(value) for value in values)
    print(printed)
    if printed != expected:
        raise SystemExit(f"README line {line!r} printed {printed!r}; it promises {expected}")
"""


def _checked(block: str) -> tuple[str, int]:
    """``block`` with every promised print checked; how many promises it has."""
    lines, promises = [], 0
    for line in block.splitlines():
        found = PROMISE.match(line)
        if found is None:
            lines.append(line)
            continue
        promises += 1
        expr, value = found["expr"], found["value"]
        lines.append(f"{found['indent']}__promised({value!r}, {line.strip()!r}, {expr})")
    return CHECK + "\n".join(lines) + "\n", promises


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2
    assert sum(_checked(block)[1] for block in BLOCKS) >= 2  # promised results are checked


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"example_{index}.py"
    script.write_text(_checked(BLOCKS[index])[0])
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the example printed nothing"
