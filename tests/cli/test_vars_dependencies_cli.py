"""``dspex vars depend|dependents|deps`` and stale/lock state in ``vars list|get``, as
subprocesses against a real store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from support.hardening import FLOAT, served
from support.serve_process import run_dspex

from dspex.state import LocalProvider


@pytest.fixture(name="store")
def _store() -> Iterator[tuple[LocalProvider, str, str]]:
    local = LocalProvider()
    sid = local.create_session()
    for name in ("base", "derived", "label"):
        local.register_variable(sid, name, FLOAT, 0.5)
    with served(local) as server:
        yield local, server.address, sid
    local.close()


def _vars(address: str, sid: str, *args: str) -> str:
    result = run_dspex("vars", *args, "--store", address, "--session", sid)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _json(address: str, sid: str, *args: str) -> Any:
    return json.loads(_vars(address, sid, *args, "--json"))


def test_depend_dependents_and_deps(store: tuple[LocalProvider, str, str]) -> None:
    local, address, sid = store
    assert _vars(address, sid, "depend", "base", "derived").strip() == "base -> derived"
    assert _json(address, sid, "depend", "derived", "label") == {
        "upstream": "derived",
        "downstream": "label",
    }
    assert _json(address, sid, "dependents", "base") == ["derived", "label"]
    assert _vars(address, sid, "dependents", "base").split() == ["derived", "label"]
    assert _vars(address, sid, "deps").splitlines() == ["base -> derived", "derived -> label"]
    cycle = run_dspex("vars", "depend", "label", "base", "--store", address, "--session", sid)
    assert cycle.returncode == 1
    assert "label -> base -> derived -> label" in cycle.stderr
    assert local.get_dependencies(sid) == [("base", "derived"), ("derived", "label")]


def test_list_and_get_show_stale_and_lock_state(store: tuple[LocalProvider, str, str]) -> None:
    local, address, sid = store
    local.add_dependency(sid, "base", "derived")
    local.set_variable(sid, "base", 0.9)
    local.acquire_lock(sid, "label", owner="secret-token", optimizer_id="grid", lease=300)
    local.renew_lock(sid, "label", owner="secret-token", progress={"best_score": 0.75})
    records = {r["name"]: r for r in _json(address, sid, "list")}
    assert records["derived"]["stale"] is True and records["base"]["stale"] is False
    lock = records["label"]["lock"]
    assert lock["optimizer_id"] == "grid" and lock["progress"] == {"best_score": 0.75}
    assert lock["lease"] == 300 and "owner" not in lock
    assert records["base"]["lock"] is None
    table = _vars(address, sid, "list")
    assert "secret-token" not in table
    lines = {line.split()[0]: line for line in table.splitlines()}
    assert "[stale]" in lines["derived"] and "[stale]" not in lines["base"]
    assert "locked by grid" in lines["label"] and '"best_score": 0.75' in lines["label"]
    assert "locked by grid" in _vars(address, sid, "get", "label")
