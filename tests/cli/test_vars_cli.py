"""The store CLI (``dspex vars``, ``dspex sessions``) run as subprocesses against a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.bridge import FLOAT, WAIT

from dspex._model import make_spec
from dspex.state import LocalProvider
from dspex.state.store import StoreServer

DSPEX = str(Path(sys.executable).parent / "dspex")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [DSPEX, *args], capture_output=True, text=True, timeout=WAIT * 6, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _json(*args: str) -> Any:
    return json.loads(_run(*args, "--json").stdout)


@pytest.fixture(name="store")
def _store(server: StoreServer, local: LocalProvider) -> tuple[str, str]:
    session_id = local.create_session()
    local.register_variable(session_id, "temperature", FLOAT, 0.7)
    local.register_variable(session_id, "instructions", make_spec(str), "Be brief.")
    local.register_variable(session_id, "demos", make_spec(list), [])
    return server.address, session_id


def test_vars_list_get_set_history_rollback(store: tuple[str, str], local: LocalProvider) -> None:
    address, sid = store
    where = ("--store", address, "--session", sid)
    listed = _json("vars", "list", *where)
    assert [v["name"] for v in listed] == ["demos", "instructions", "temperature"]
    assert _json("vars", "get", "temperature", *where)["value"] == 0.7
    assert _json("vars", "set", "temperature", "0.2", *where)["version"] == 2
    assert _json("vars", "set", "instructions", "Answer in French.", *where)["value"] == (
        "Answer in French."
    )
    assert _json("vars", "set", "demos", '[{"q": "x", "a": "y"}]', *where)["value"] == [
        {"q": "x", "a": "y"}
    ]
    assert local.get_variable(sid, "temperature").value == 0.2
    history = _json("vars", "history", "temperature", *where)
    assert [h["value"] for h in history] == [0.7, 0.2]
    assert _json("vars", "rollback", "temperature", "1", *where)["value"] == 0.7
    assert "temperature  float  v3" in _run("vars", "get", "temperature", *where).stdout


def test_vars_watch_prints_updates_as_json_lines(
    store: tuple[str, str], local: LocalProvider
) -> None:
    address, sid = store
    local.set_variable(sid, "temperature", 0.3)
    result = _run(
        "vars", "watch", "temperature", "--store", address, "--session", sid,
        "--after-revision", "3", "--count", "1", "--json",
    )  # fmt: skip
    update = json.loads(result.stdout.strip())
    assert (update["revision"], update["kind"], update["value"]) == (4, "set", 0.3)


def test_sessions_list_and_create(store: tuple[str, str]) -> None:
    address, sid = store
    created = _json("sessions", "create", "--store", address, "--session", "named")
    assert created == {"session_id": "named"}
    sessions = _json("sessions", "list", "--store", address)
    assert {s["session_id"] for s in sessions} == {sid, "named"}
    assert "3 variables" in _run("sessions", "list", "--store", address).stdout


@pytest.mark.parametrize(
    "args",
    [
        ("sessions", "list"),
        ("vars", "list", "--session", "s"),
        ("vars", "get", "x", "--session", "s"),
        ("vars", "set", "x", "1", "--session", "s"),
        ("vars", "watch", "--session", "s", "--count", "1"),
        ("vars", "history", "x", "--session", "s"),
        ("vars", "rollback", "x", "1", "--session", "s"),
    ],
)
def test_unreachable_store_is_a_clear_error_without_traceback(args: tuple[str, ...]) -> None:
    result = _run(*args, "--store", "grpc://127.0.0.1:1", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "dspex: error: session store grpc://127.0.0.1:1 is unreachable"
    )
    assert "Traceback" not in result.stderr


def test_errors_from_the_store_are_one_line(store: tuple[str, str]) -> None:
    address, sid = store
    bad = _run(
        "vars", "set", "temperature", "5", "--store", address, "--session", sid, check=False
    )
    assert bad.returncode == 1 and "breaks rule max=2.0" in bad.stderr
    missing = _run("vars", "get", "nope", "--store", address, "--session", sid, check=False)
    assert missing.returncode == 1 and "no variable 'nope'" in missing.stderr
    notjson = _run("vars", "set", "temperature", "warm", "--store", address, "--session", sid,
                   check=False)  # fmt: skip
    assert notjson.returncode == 1 and "not JSON" in notjson.stderr
    assert "Traceback" not in bad.stderr + missing.stderr + notjson.stderr
