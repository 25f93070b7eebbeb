"""The Ray backend and the store: TCP with a token, actor options passed through, a store the
cluster cannot reach failing fast at creation, an explicit listening host, TLS with the CA
shipped to the actors, and ray staying optional (real local Ray)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import backend_targets
import pytest
from support.hardening import make_pki
from support.redis_server import free_port

import dspex
from dspex.errors import SessionError, WorkerSetupError
from dspex.state.store import SessionStoreProvider, StoreServer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def ray(local_ray: Any) -> Any:
    return local_ray


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a black hole)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_a_ray_remote_promotes_to_tcp_with_a_token_the_store_requires(
    ray: Any, session: dspex.Session
) -> None:
    session.register("temperature", float, 0.7)
    with dspex.Remote(backend_targets.Sleepy(), workers=1, backend="ray") as pool:
        address, token = pool.address, session.store_token
        assert address == f"grpc://{ray.util.get_node_ip_address()}:{address.rsplit(':', 1)[1]}"
        assert token is not None and len(token) >= 32
        assert token not in repr(pool) and token not in repr(pool._pool)
        without = SessionStoreProvider(address, timeout=10)
        try:
            with pytest.raises(dspex.errors.UnauthenticatedError):
                without.get_variable(session.session_id, "temperature")
        finally:
            without.close()
        allowed = SessionStoreProvider(address, token=token, timeout=10)
        try:
            assert allowed.get_variable(session.session_id, "temperature").value == 0.7
        finally:
            allowed.close()


def test_a_session_in_a_tcp_store_passes_its_address_and_token_on(ray: Any) -> None:
    token = "s3cret-token-for-this-test"
    with (
        StoreServer.start(address="127.0.0.1:0", token=token) as server,
        dspex.Session(store=server.address, token=token) as session,
    ):
        session.register("temperature", float, 0.4)
        with dspex.Remote(backend_targets.Writer(), workers=1, backend="ray") as pool:
            assert pool.address == server.address
            assert pool(name="temperature", value=0.9).read == 0.9
        assert session.get("temperature") == 0.9


def test_a_session_promoted_on_an_explicit_host_keeps_it_over_tls(ray: Any, tmp_path: Any) -> None:
    """Ray replaces a loopback ``--node-ip-address`` with the machine's routable address, so a
    one-machine cluster keeps the store on loopback by promoting first with ``host=``; over
    TLS the actors trust the CA that travelled in their setup (no $DSPEX_TLS_CA anywhere)."""
    pki = make_pki(tmp_path)
    with dspex.Session(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca) as tls:
        tls.register("temperature", float, 0.4)
        address = tls.promote(host="127.0.0.1")
        assert address.startswith("grpcs://127.0.0.1:")
        with dspex.Remote(backend_targets.Writer(), workers=1, backend="ray") as pool:
            assert pool.address == address
            assert pool(name="temperature", value=0.9).read == 0.9
        assert tls.get("temperature") == 0.9


def test_a_session_already_on_a_unix_socket_refuses_a_ray_remote_clearly(
    ray: Any, session: dspex.Session
) -> None:
    address = session.promote()
    with pytest.raises(SessionError, match=r"already reachable only on this machine") as caught:
        dspex.Remote(backend_targets.Sleepy(), workers=1, backend="ray")
    assert address in str(caught.value)


@pytest.mark.parametrize("proxy", ["refused", "black hole"])
def test_a_cluster_that_cannot_reach_the_store_fails_at_creation_naming_it(
    ray: Any, session: dspex.Session, silent_port: int, proxy: str
) -> None:
    # The actors' gRPC goes through an HTTP proxy that refuses, or never answers: the
    # network between the cluster and the store is broken, while this process reaches it.
    port = silent_port if proxy == "black hole" else free_port()
    options = {"runtime_env": {"env_vars": {"grpc_proxy": f"http://127.0.0.1:{port}"}}}
    started = time.monotonic()
    with pytest.raises(WorkerSetupError) as caught:
        dspex.Remote(
            backend_targets.Sleepy(), workers=1, backend="ray", actor_options=options,
            setup_timeout=40,
        )  # fmt: skip
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert f"through the store at {session.address}" in message
    assert "StoreUnavailableError" in message or "cannot reach" in message, message
    assert elapsed < 60, f"creation took {elapsed:.0f}s to fail"  # 20 s to first reach it


def test_actor_options_pass_through(ray: Any, session: dspex.Session) -> None:
    options = {
        "num_cpus": 0.5,
        "resources": {"dspex_test_slot": 1},
        "runtime_env": {"env_vars": {"DSPEX_TEST_MARK": "from-runtime-env"}},
    }
    before = ray.available_resources()
    with dspex.Remote(
        backend_targets.Sleepy(), workers=2, backend="ray", actor_options=options
    ) as pool:
        replies = pool.map([{"seconds": 0, "env": "DSPEX_TEST_MARK"}] * 4)
        assert {r.env for r in replies} == {"from-runtime-env"}
        held = ray.available_resources()
        assert before["CPU"] - held.get("CPU", 0.0) == pytest.approx(1.0)  # 2 x 0.5
        assert before["dspex_test_slot"] - held.get("dspex_test_slot", 0.0) == 2
    with pytest.raises(WorkerSetupError, match=r"did not start within 5s"):
        dspex.Remote(
            backend_targets.Sleepy(), workers=1, backend="ray", setup_timeout=5,
            actor_options={"resources": {"no_such_node_resource": 1}},
        )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"backend": "dask"}, "backend must be 'spawn' or 'ray', got 'dask'"),
        ({"actor_options": {"num_cpus": 1}}, "actor_options are Ray actor options"),
        (
            {"backend": "ray", "actor_options": {"max_restarts": 3}},
            r"actor option\(s\) \['max_restarts'\] are not passed",
        ),
        ({"setup_timeout": 0}, "setup_timeout must be positive"),
    ],
)
def test_bad_backend_arguments_are_refused_before_anything_starts(
    session: dspex.Session, kwargs: dict[str, Any], text: str
) -> None:
    with pytest.raises(WorkerSetupError, match=text):
        dspex.Remote(backend_targets.Sleepy(), **kwargs)
    assert session.backend == "local"


def test_import_dspex_and_the_spawn_backend_never_import_ray() -> None:
    script = textwrap.dedent(
        """
        import json, sys
        import dspex
        from backend_targets import Sleepy
        if __name__ == "__main__":
            with dspex.Session():
                with dspex.Remote(Sleepy(), workers=1) as pool:
                    pool(seconds=0)
            print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "ray")))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        check=False, cwd=str(__import__("pathlib").Path(__file__).parent),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []
