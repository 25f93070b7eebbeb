"""A tool called the wrong way is refused as ToolArgumentsError naming what to do, and the
tool does not run: arguments given by position, arguments that are not a mapping."""

from __future__ import annotations

import pytest

import dspex
from dspex.errors import ToolArgumentsError


def test_a_tool_called_by_position_says_how_to_call_it_by_name(session: dspex.Session) -> None:
    ran: list[str] = []

    @dspex.tool
    def weather(city: str, days: int = 1) -> str:
        """Weather."""
        ran.append(city)
        return "sunny"

    with pytest.raises(ToolArgumentsError, match=r"by position; call weather\(city=\.\.\., days"):
        weather("Oslo")
    assert ran == []
    assert weather(city="Oslo") == "sunny"


def test_arguments_that_are_not_a_mapping_are_refused_before_the_tool_runs(
    session: dspex.Session,
) -> None:
    ran: list[int] = []

    @dspex.tool
    def double(x: int) -> int:
        """Double."""
        ran.append(x)
        return 2 * x

    with pytest.raises(ToolArgumentsError, match="must be a mapping of argument names to values"):
        session.call_tool("double", [1])  # type: ignore[arg-type]
    assert ran == []
