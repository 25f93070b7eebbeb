"""@dspex.tool in an in-process session: registration, schema, direct calls and clear errors."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import textwrap

import cloudpickle
import dspy
import pydantic
import pytest

import dspex
from dspex.errors import (
    SessionError,
    ToolArgumentsError,
    ToolError,
    ToolNotFoundError,
)
from dspex.tools import SessionTool


class Place(pydantic.BaseModel):
    city: str
    country: str = "NO"


def test_the_decorator_registers_name_docstring_and_schema_from_hints(
    session: dspex.Session,
) -> None:
    @dspex.tool
    def forecast(place: Place, days: int = 3, units: str = "C") -> str:
        """The weather forecast for a place.

        Uses no network.
        """
        return f"{place.city}: sunny"

    assert isinstance(forecast, SessionTool)
    [info] = session.list_tools()
    assert info.name == "forecast"
    assert info.description == "The weather forecast for a place.\n\nUses no network."
    assert info.owner == forecast_owner(session)
    assert info.connected
    parameters = info.parameters
    assert parameters["type"] == "object"
    assert parameters["required"] == ["place"]
    assert parameters["additionalProperties"] is False
    assert parameters["properties"]["days"] == {"type": "integer", "default": 3}
    assert parameters["properties"]["place"]["properties"]["city"]["type"] == "string"
    assert parameters["properties"]["place"]["required"] == ["city"]


def forecast_owner(session: dspex.Session) -> str:
    """The owner id this process uses in the session (host:pid:random)."""
    owner = session._tool_table().owner
    assert owner.split(":")[1].isdigit()
    return owner


def test_name_and_description_can_be_given(session: dspex.Session) -> None:
    @dspex.tool(name="lookup_city", description="Find a city.")
    def find(query: str) -> str:
        return query

    assert [(t.name, t.description) for t in session.list_tools()] == [
        ("lookup_city", "Find a city.")
    ]
    assert find(query="Oslo") == "Oslo"
    assert session.call_tool("lookup_city", {"query": "Bergen"}) == "Bergen"


def test_local_calls_run_the_function_here_with_converted_arguments(
    session: dspex.Session,
) -> None:
    seen: list[object] = []

    @dspex.tool
    def locate(place: Place, days: int = 1) -> Place:
        """Echo the place."""
        seen.append((place, days))
        return place

    result = locate(place={"city": "Oslo"}, days=2)
    assert result == Place(city="Oslo")  # in-process: the function's own value, no JSON
    assert seen == [(Place(city="Oslo", country="NO"), 2)]
    assert session.call_tool("locate", {"place": Place(city="Bergen")}).city == "Bergen"
    assert session.address is None and session.backend == "local"  # no server started


def test_a_tool_that_raises_gives_a_tool_error_with_its_traceback(
    session: dspex.Session,
) -> None:
    @dspex.tool
    def divide(a: float, b: float) -> float:
        """a / b."""
        return a / b

    with pytest.raises(ToolError, match=r"tool 'divide' raised ZeroDivisionError") as caught:
        divide(a=1.0, b=0.0)
    error = caught.value
    assert error.error_type == "ZeroDivisionError"
    assert error.tool == "divide"
    assert "in divide" in error.remote_traceback
    assert "return a / b" in error.remote_traceback
    assert isinstance(error.__cause__, ZeroDivisionError)


@pytest.mark.parametrize(
    ("arguments", "problems"),
    [
        ({}, ["missing required argument 'city'"]),
        ({"city": "Oslo", "town": "x"}, ["unknown argument 'town'"]),
        ({"city": "Oslo", "days": "three"}, ["argument 'days': 'three' is not of type 'integer'"]),
        (
            {"days": 2.5, "town": "x"},
            [
                "missing required argument 'city'",
                "argument 'days': 2.5 is not of type 'integer'",
                "unknown argument 'town'",
            ],
        ),
    ],
)
def test_wrong_arguments_are_refused_before_the_function_runs(
    session: dspex.Session, arguments: dict[str, object], problems: list[str]
) -> None:
    ran: list[str] = []

    @dspex.tool
    def weather(city: str, days: int = 1) -> str:
        """Weather."""
        ran.append(city)
        return "sunny"

    with pytest.raises(ToolArgumentsError) as caught:
        session.call_tool("weather", arguments)
    message = str(caught.value)
    assert message.startswith("tool 'weather' called with wrong arguments")
    assert "it takes city: string, days: integer (optional)" in message
    assert sorted(caught.value.problems) == sorted(problems)
    assert isinstance(caught.value, ValueError)
    assert ran == []


def test_a_model_argument_with_a_wrong_field_is_refused(session: dspex.Session) -> None:
    @dspex.tool
    def visit(place: Place) -> str:
        """Visit."""
        raise AssertionError("must not run")

    with pytest.raises(ToolArgumentsError, match=r"argument 'place': .*'city' is a required"):
        visit(place={"country": "SE"})


def test_an_unknown_tool_lists_the_known_ones(session: dspex.Session) -> None:
    @dspex.tool
    def alpha() -> int:
        """A."""
        return 1

    @dspex.tool
    def beta() -> int:
        """B."""
        return 2

    with pytest.raises(
        ToolNotFoundError, match=r"no tool named 'gamma'.*known tools: alpha, beta"
    ):
        session.call_tool("gamma")
    with pytest.raises(LookupError):
        SessionTool.lookup("gamma")
    assert SessionTool.lookup("beta")() == 2


def test_registering_outside_a_session_names_the_tool() -> None:
    with pytest.raises(SessionError, match=r"registers 'orphan'.*dspex.Session"):

        @dspex.tool
        def orphan() -> None:
            """Nothing."""


def test_functions_that_cannot_take_named_arguments_are_refused(session: dspex.Session) -> None:
    def spread(*values: int) -> int:
        return sum(values)

    def positional(x: int, /) -> int:
        return x

    with pytest.raises(ToolError, match=r"parameter 'values' is variadic positional"):
        dspex.tool(spread)
    with pytest.raises(ToolError, match=r"parameter 'x' is positional-only"):
        dspex.tool(positional)
    with pytest.raises(ToolError, match=r"tool name 'two words' is not valid"):
        dspex.tool(name="two words")(lambda: None)
    assert session.list_tools() == []


def test_kwargs_tools_accept_extra_arguments(session: dspex.Session) -> None:
    @dspex.tool
    def tag(name: str, **extra: str) -> dict[str, str]:
        """Tag."""
        return {"name": name, **extra}

    [info] = session.list_tools()
    assert "additionalProperties" not in info.parameters
    assert info.parameters["required"] == ["name"]
    assert tag(name="a", color="red") == {"name": "a", "color": "red"}


def test_async_tools_run_to_completion(session: dspex.Session) -> None:
    @dspex.tool
    async def slow_double(x: int) -> int:
        """Double x, eventually."""
        await asyncio.sleep(0)
        return 2 * x

    assert slow_double(x=4) == 8
    assert asyncio.run(slow_double.acall(x=5)) == 10


def test_registering_the_same_name_again_replaces_it(session: dspex.Session) -> None:
    @dspex.tool(name="version")
    def first() -> int:
        """First."""
        return 1

    @dspex.tool(name="version")
    def second() -> int:
        """Second."""
        return 2

    assert [t.description for t in session.list_tools()] == ["Second."]
    assert first() == 2  # calls go by name to whatever the session holds now


def test_as_dspy_gives_a_dspy_tool_with_the_same_name_description_and_args(
    session: dspex.Session,
) -> None:
    @dspex.tool
    def weather(city: str, days: int = 1) -> str:
        """The forecast for a city."""
        return f"{city}: {days} days of sun"

    converted = weather.as_dspy()
    assert isinstance(converted, dspy.Tool)
    assert (converted.name, converted.desc) == ("weather", "The forecast for a city.")
    assert converted.args == {
        "city": {"type": "string"},
        "days": {"type": "integer", "default": 1},
    }
    assert converted(city="Oslo", days=2) == "Oslo: 2 days of sun"
    with pytest.raises(ValueError):  # dspy checks the schema, then the owner does
        converted(city="Oslo", days="two")


def test_a_pickled_tool_keeps_its_description_but_not_the_function(
    session: dspex.Session,
) -> None:
    @dspex.tool
    def weather(city: str) -> str:
        """The forecast for a city."""
        return "sunny"

    for copy in (
        pickle.loads(pickle.dumps(weather)),
        cloudpickle.loads(cloudpickle.dumps(weather)),
    ):
        assert (copy.name, copy.description, copy.parameters) == (
            weather.name,
            weather.description,
            weather.parameters,
        )
        assert copy.function is None
        assert copy(city="Oslo") == "sunny"  # by name, through the current session
    stub = cloudpickle.loads(cloudpickle.dumps(weather.as_dspy()))
    assert stub(city="Oslo") == "sunny"


def test_tools_in_a_local_session_load_neither_grpc_nor_a_server() -> None:
    code = textwrap.dedent(
        """
        import sys
        import dspex
        with dspex.Session() as session:
            @dspex.tool
            def echo(text: str) -> str:
                "Echo."
                return text
            assert echo(text="hi") == "hi"
            assert session.call_tool("echo", {"text": "yo"}) == "yo"
            assert session.address is None
        print(sorted(m for m in sys.modules if m == "grpc" or m.startswith("grpc.")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
