"""A new user's mistakes on the command line get one clear error naming the mistake and what to
do, with nothing started or created: a mistyped flag, an address no server can listen on, a
port out of range. Each runs the real ``dspex`` command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.serve_process import ServeProcess, run_dspex

import dspex


@pytest.mark.parametrize(
    ("args", "command", "hint"),
    [
        (("serve", "--adress", "127.0.0.1:0"), "dspex serve", "--adress: did you mean --address?"),
        (
            ("sessions", "list", "--store", "grpc://127.0.0.1:1", "--tokn=x"),
            "dspex sessions list",
            "--tokn: did you mean --token?",
        ),
        (("demo", "--lst"), "dspex demo", "--lst: did you mean --list?"),
    ],
)
def test_a_mistyped_flag_is_named_by_its_command_with_the_flag_it_was_close_to(
    args: tuple[str, ...], command: str, hint: str
) -> None:
    result = run_dspex(*args)
    assert result.returncode == 2
    assert f"usage: {command} " in result.stderr  # the command's usage, not `dspex COMMAND ...`
    assert f"{command}: error: unrecognized arguments: " in result.stderr
    assert hint in result.stderr


@pytest.mark.parametrize("address", ["nonsense", "50051", "127.0.0.1:99999", "http://127.0.0.1:0"])
def test_an_address_no_server_can_listen_on_is_refused_before_anything_opens(
    address: str, tmp_path: Path
) -> None:
    data = tmp_path / "state"
    result = run_dspex("serve", "--address", address, "--data", str(data), "--insecure")
    assert result.returncode == 1
    assert f"--address {address!r} is not an address to listen on; use HOST:PORT" in result.stderr
    assert "refusing to serve" not in result.stderr  # not mistaken for an exposed address
    assert "Traceback" not in result.stderr and "listening" not in result.stdout
    assert "sessions kept" not in result.stderr and not data.exists()  # nothing opened


def test_a_grpcs_address_without_a_certificate_says_what_tls_needs() -> None:
    result = run_dspex("serve", "--address", "grpcs://127.0.0.1:0")
    assert result.returncode == 1
    assert "a grpcs:// server needs --tls-cert and --tls-key" in result.stderr
    assert "listening" not in result.stdout


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (
            ("serve", "--address", "127.0.0.1:0", "--dashboard-port", "99999999"),
            "--dashboard-port",
        ),
        (("serve", "--address", "127.0.0.1:0", "--metrics-port", "-5"), "--metrics-port"),
        (("dashboard", "--store", "grpc://127.0.0.1:1", "--port", "70000"), "--port"),
    ],
)
def test_a_port_out_of_range_is_refused_in_one_line(args: tuple[str, ...], flag: str) -> None:
    result = run_dspex(*args, timeout=30)
    assert result.returncode == 2
    assert f"argument {flag}: must be a port number from 0 to 65535" in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stdout


@pytest.fixture(scope="module")
def store() -> Iterator[ServeProcess]:
    """A real ``dspex serve`` without access control, with one session holding temperature."""
    with ServeProcess() as server:
        with dspex.Session(server.address, session_id="mistakes", create=True) as session:
            session.register("temperature", float, 0.7)  # the session is kept in the store
        yield server


def test_a_mistyped_variable_name_is_answered_with_the_name_it_was_close_to(
    store: ServeProcess,
) -> None:
    result = run_dspex(
        "vars", "get", "temprature", "--store", store.address, "--session", "mistakes"
    )
    assert result.returncode == 1
    assert "no variable 'temprature' in session 'mistakes' (did you mean 'temperature'?)" in (
        result.stderr
    )


def test_a_wrong_token_says_which_token_to_send_and_a_principal_gets_no_name_hint(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret")
    with ServeProcess("--token-file", str(token)) as server:
        wrong = run_dspex("sessions", "list", "--store", server.address, "--token", "wrong")
        assert wrong.returncode == 1
        assert "the bearer token is not known to this store; send one it accepts" in wrong.stderr
        assert "--token-file or $DSPEX_TOKEN" in wrong.stderr
        with dspex.Session(
            server.address, session_id="guarded", create=True, token="s3cret"
        ) as session:
            session.register("temperature", float, 0.7)
        typo = run_dspex(
            "vars", "get", "temprature", "--store", server.address, "--session", "guarded",
            "--token", "s3cret",
        )  # fmt: skip
    assert typo.returncode == 1 and "no variable 'temprature'" in typo.stderr
    assert "did you mean" not in typo.stderr  # under access control no other name leaks


def test_a_lock_wait_that_gives_up_says_it_waited(store: ServeProcess) -> None:
    with (
        dspex.Session(store.address, session_id="mistakes") as session,
        session.optimizing("temperature", optimizer_id="grid"),
    ):
        result = run_dspex(
            "vars", "lock", "temperature", "--store", store.address, "--session", "mistakes",
            "--policy", "wait", "--lock-timeout", "0.3",
        )  # fmt: skip
    assert result.returncode == 1
    assert "locked by optimizer 'grid'" in result.stderr
    assert "with policy 'wait' and it is still held" in result.stderr
    assert "Wait for it" not in result.stderr


@pytest.mark.parametrize("content", [None, "{not json"])
def test_an_unreadable_auth_file_points_to_its_format(tmp_path: Path, content: str | None) -> None:
    auth = tmp_path / "auth.json"
    if content is not None:
        auth.write_text(content)
    result = run_dspex("serve", "--address", "127.0.0.1:0", "--auth-file", str(auth))
    assert result.returncode == 1
    assert f"cannot read auth file {str(auth)!r}: " in result.stderr
    assert "format of docs/security.md ('The auth file')" in result.stderr
    assert "listening" not in result.stdout


STORE_ARGS = ("--store", "grpc://127.0.0.1:1", "--session", "s")


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("vars", "get", "x", "--timeout", "0"), "--timeout"),
        (("vars", "history", "x", "--limit", "-2"), "--limit"),
        (("vars", "watch", "x", "--count", "0"), "--count"),
        (("vars", "rollback", "x", "0"), "version"),
        (("vars", "lock", "x", "--lease", "0"), "--lease"),
        (("vars", "lock", "x", "--hold", "-1"), "--hold"),
        (("vars", "progress", "--timeout-after", "-3"), "--timeout-after"),
    ],
)
def test_a_number_out_of_range_is_refused_before_the_store_is_contacted(
    args: tuple[str, ...], flag: str
) -> None:
    result = run_dspex(*args, *STORE_ARGS)
    assert result.returncode == 2
    assert f"argument {flag}: must be " in result.stderr
    assert "unreachable" not in result.stderr  # refused before any call


def test_a_session_ttl_of_zero_is_refused_when_parsed() -> None:
    result = run_dspex("sessions", "create", "--store", "grpc://127.0.0.1:1", "--ttl", "0")
    assert result.returncode == 2
    assert "argument --ttl: must be more than 0 seconds, got 0" in result.stderr


def test_a_dashboard_beside_an_auth_file_store_needs_its_token_before_anything_listens(
    tmp_path: Path,
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(
        '{"principals": {"viewer": {"token": "v"}}, '
        '"rules": [{"principal": "viewer", "sessions": "*", "allow": ["observe"]}]}'
    )
    result = run_dspex(
        "serve", "--address", "127.0.0.1:0", "--auth-file", str(auth), "--dashboard-port", "0"
    )
    assert result.returncode == 1
    assert "--dashboard-port with --auth-file needs --dashboard-token" in result.stderr
    assert "listening" not in result.stdout  # refused before the store started
