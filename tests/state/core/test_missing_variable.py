"""An unknown variable name is answered with the registered name it is close to; a name that
is not a string still gets the plain VariableNotFoundError."""

from __future__ import annotations

import pytest

import dspex
from dspex.errors import VariableNotFoundError


def test_a_typo_is_answered_with_the_close_name_and_anything_else_without_a_hint() -> None:
    with dspex.Session() as session:
        session.register("temperature", float, 0.7)
        with pytest.raises(VariableNotFoundError, match=r"\(did you mean 'temperature'\?\)"):
            session.set("temprature", 0.2)
        with pytest.raises(VariableNotFoundError) as far:
            session.get("budget")
        assert "did you mean" not in far.value.message
        with pytest.raises(VariableNotFoundError, match="no variable 42"):
            session.get(42)  # type: ignore[arg-type]
