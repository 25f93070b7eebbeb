"""Big values through a real ``dspex serve`` (issue 12, item 6): history and the change log are
bounded in bytes as well as in versions, in memory and on disk, so a stream of large sets
cannot grow a server or its data directory without bound.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.faults import TEXT, record_figures
from support.serve_process import ServeProcess

from dspex import errors
from dspex.state.store import SessionStoreProvider

VALUE = 256 * 1024
SETS = 40
BOUND = 1024 * 1024  # --history-bytes and --log-bytes: four values each


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_history_and_log_are_bounded_in_bytes(tmp_path: Path, engine: str) -> None:
    data = ("--data", str(tmp_path / "data")) if engine == "sqlite" else ()
    bounds = ("--history-bytes", str(BOUND), "--log-bytes", str(BOUND))
    with ServeProcess(*data, *bounds) as server:
        assert server.process is not None
        client = SessionStoreProvider(server.address, timeout=30.0)
        try:
            session_id = client.create_session()
            client.register_variable(session_id, "blob", TEXT, "")
            before = _rss_mib(server.process.pid)
            for i in range(SETS):
                client.set_variable(session_id, "blob", chr(ord("a") + i % 26) * VALUE)
            history = client.get_history(session_id, "blob")
            grown = _rss_mib(server.process.pid) - before
        finally:
            client.close()
    assert 1 <= len(history) <= BOUND // VALUE, len(history)  # was all 40 (history_size 100)
    assert history[-1].value == chr(ord("a") + (SETS - 1) % 26) * VALUE
    sent = SETS * VALUE / 2**20
    assert grown < 6 * BOUND / 2**20 + 30, f"RSS grew {grown:.0f} MiB for {sent:.0f} MiB sent"
    if engine == "sqlite":
        size = sum(f.stat().st_size for f in (tmp_path / "data").iterdir()) / 2**20
        assert size < sent, f"the data dir holds {size:.1f} MiB of {sent:.0f} MiB sent"
    record_figures(
        f"history_bytes_{engine}", sets=SETS, value_kib=VALUE // 1024,
        versions_kept=len(history), rss_growth_mib=round(grown, 1),
    )  # fmt: skip


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_session_and_store_byte_budgets_refuse_writes_naming_the_limit(
    tmp_path: Path, engine: str
) -> None:
    data = ("--data", str(tmp_path / "data")) if engine == "sqlite" else ()
    budgets = ("--max-session-bytes", str(3 * VALUE), "--max-store-bytes", str(9 * VALUE // 2))
    with ServeProcess(*data, *budgets) as server:
        client = SessionStoreProvider(server.address, timeout=30.0)
        try:
            first, second = client.create_session(), client.create_session()
            client.register_variable(first, "a", TEXT, "x" * VALUE)
            client.register_variable(first, "b", TEXT, "y" * VALUE)
            with pytest.raises(errors.LimitExceededError, match="bytes kept in session") as hit:
                client.update_variables(first, {"a": "z" * VALUE, "b": "w" * VALUE}, atomic=True)
            assert f"limit {3 * VALUE}" in str(hit.value)
            assert client.get_variable(first, "a").value == "x" * VALUE  # nothing applied
            client.register_variable(second, "c", TEXT, "v" * VALUE)
            client.register_variable(second, "d", TEXT, "u" * VALUE)
            with pytest.raises(errors.LimitExceededError, match="bytes kept in the whole store"):
                client.set_variable(second, "c", "t" * VALUE)
            client.delete_variable(first, "b")  # freeing space makes room again
            assert client.set_variable(second, "c", "t" * VALUE).version == 2
        finally:
            client.close()
