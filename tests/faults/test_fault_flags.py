"""``dspex serve`` flags under abuse: out-of-range numbers, tokens on the command line, and a
plaintext server without auth on a non-loopback address (issue 12, items 7 and 8).

Every refusal happens before anything listens: one clear error naming the flag and its range.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.serve_process import DSPEX, ServeProcess, run_dspex

from dspex import errors
from dspex._model import make_spec
from dspex.state import LocalProvider
from dspex.state.store import SessionStoreProvider

FLOAT = make_spec(float)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--history-size", "0", "--history-size: must be at least 1, got 0"),
        ("--history-size", "-5", "--history-size: must be at least 1, got -5"),
        ("--log-size", "0", "--log-size: must be at least 1, got 0"),
        ("--max-request-bytes", "-1", "must be at least 1024, got -1"),
        ("--max-value-bytes", "0", "--max-value-bytes: must be at least 1, got 0"),
        ("--heartbeat", "0", "--heartbeat: must be at least 0.1 seconds, got 0"),
        ("--heartbeat", "-1", "--heartbeat: must be at least 0.1 seconds, got -1"),
        ("--heartbeat", "nan", "--heartbeat: must be a finite number of seconds, got nan"),
        ("--grace", "-1", "--grace: must be at least 0 seconds, got -1"),
        ("--watch-queue-size", "0", "--watch-queue-size: must be at least 1, got 0"),
        ("--history-size", "many", "--history-size: must be a whole number, got 'many'"),
    ],
)
def test_out_of_range_flag_is_refused_before_listening(
    tmp_path: Path, flag: str, value: str, expected: str
) -> None:
    result = run_dspex("serve", "--address", "127.0.0.1:0", "--data", str(tmp_path), flag, value)
    assert result.returncode == 2 and result.stdout == "", result
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "dspex.sqlite3").exists()  # nothing was opened


def test_value_limit_above_request_limit_is_refused() -> None:
    result = run_dspex(
        "serve", "--address", "127.0.0.1:0", "--max-request-bytes", "2048",
        "--max-value-bytes", "4096",
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == "", result
    assert "--max-value-bytes 4096 is larger than --max-request-bytes 2048" in result.stderr


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_engines_refuse_a_history_size_of_zero(tmp_path: Path, engine: str) -> None:
    """The API path of `--history-size 0 --data`: the engine refuses to be built, instead of a
    set that failed with IndexError after it was applied."""
    from dspex.state.engines import MemoryEngine, SQLiteEngine

    with pytest.raises(errors.ConstraintError, match=r"history_size must be .* at least 1"):
        if engine == "memory":
            MemoryEngine(history_size=0)
        else:
            SQLiteEngine(tmp_path, history_size=0)
    LocalProvider(MemoryEngine(history_size=1)).close()


def test_token_file_protects_the_server_and_keeps_the_token_off_the_command_line(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with ServeProcess("--token-file", str(token_file)) as server:
        assert server.process is not None
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert b"s3cret-token" not in cmdline
        anonymous = SessionStoreProvider(server.address, token="wrong", timeout=5.0)
        with pytest.raises(errors.UnauthenticatedError):
            anonymous.create_session()
        anonymous.close()
        client = SessionStoreProvider(server.address, token="s3cret-token", timeout=5.0)
        session_id = client.create_session()
        client.register_variable(session_id, "x", FLOAT, 0.5)
        assert client.set_variable(session_id, "x", 1.0).value == 1.0
        client.close()


def test_token_on_the_command_line_is_warned_about() -> None:
    with ServeProcess("--token", "visible") as server:
        assert server.process is not None
    assert any("visible to every local user" in line for line in server.stderr_lines)


@pytest.mark.parametrize(
    ("content", "expected"), [("", "must hold one token"), (None, "cannot read the token file")]
)
def test_bad_token_file_is_refused(tmp_path: Path, content: str | None, expected: str) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    result = run_dspex("serve", "--address", "127.0.0.1:0", "--token-file", str(token_file))
    assert result.returncode == 1 and expected in result.stderr, result


def test_exposed_plaintext_server_without_auth_needs_insecure(tmp_path: Path) -> None:
    """Decided before anything listens (so nothing here ever listens beyond loopback)."""
    no_token = {**os.environ, "DSPEX_TOKEN": ""}
    refused = _serve(no_token, "--address", "0.0.0.0:0")
    assert refused.returncode == 1 and refused.stdout == "", refused
    assert "refusing to serve 0.0.0.0:0 without TLS and without a token" in refused.stderr
    assert "--insecure" in refused.stderr
    # With --insecure the check passes with a warning; an unusable --data then stops the
    # server before it listens, so the warning can be read without exposing a port.
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    allowed = _serve(no_token, "--address", "0.0.0.0:0", "--insecure", "--data", str(not_a_dir))
    assert "warning: serving 0.0.0.0:0 without TLS or a token (--insecure)" in allowed.stderr
    assert "refusing" not in allowed.stderr and allowed.stdout == "", allowed


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DSPEX, "serve", *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
