"""A new user's mistakes on the command line get one clear error naming the mistake and what to
do, with nothing started or created: a mistyped flag, an address no server can listen on, a
port out of range. Each runs the real ``dspex`` command."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.serve_process import run_dspex


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
