"""Direct and proxied access agree: one seeded workload, run on an engine directly and through
a real store server over the same kind of engine, gives the same transcript.

The transcript is what a caller can observe, call by call: each result (records without their
timestamps) or the error's class and code, then the session's whole change log. Optuna checks its
gRPC storage proxy the same way, against the RDB storage it proxies.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from support import full_log
from support.engines import ENGINE_KINDS
from support.providers import provide

from dspex import errors
from dspex._model import Choice, VariableRecord, VariableUpdate, make_spec
from dspex.state import StateProvider

SEEDS = (1, 2)
STEPS = 120
NAMES = ("t", "n", "s", "c", "missing")
SPECS = {
    "t": (make_spec(float, min=0.0, max=2.0), 0.5),
    "n": (make_spec(int, min=0, max=10), 3),
    "s": (make_spec(str, max_length=5), "abc"),
    "c": (make_spec(Choice("a", "b")), "a"),
}
VALUES: dict[str, tuple[Any, ...]] = {
    "t": (0.0, 1.5, 2.5, "x", 1),
    "n": (0, 7, 11, 2.5, "3"),
    "s": ("", "hello", "toolong", 5),
    "c": ("a", "b", "z"),
    "missing": (1,),
}
OWNERS = ("owner-a", "owner-b")


def _record(record: VariableRecord) -> tuple[Any, ...]:
    lock = None if record.lock is None else record.lock.get("optimizer_id")
    return (record.name, record.value, record.version, record.revision, record.stale, lock,
            record.writer, dict(record.metadata))  # fmt: skip


def _observe(result: Any) -> Any:
    if isinstance(result, VariableRecord):
        return _record(result)
    if isinstance(result, VariableUpdate):
        return (result.kind, result.name, result.revision, _record(result.record))
    if isinstance(result, errors.DspexError):
        return ("error", type(result).__name__, result.code)
    if isinstance(result, dict):
        return {key: _observe(value) for key, value in sorted(result.items())}
    if isinstance(result, list | tuple):
        return [_observe(item) for item in result]
    return result


Step = Callable[[StateProvider, str, random.Random], Any]


def _set(p: StateProvider, sid: str, rng: random.Random) -> Any:
    name = rng.choice(NAMES)
    expected = None if rng.random() < 0.7 else rng.randint(1, 4)
    return p.set_variable(sid, name, rng.choice(VALUES[name]), expected_version=expected)


def _update(p: StateProvider, sid: str, rng: random.Random) -> Any:
    names = rng.sample(NAMES, 2)
    values = {name: rng.choice(VALUES[name]) for name in names}
    return p.update_variables(sid, values, atomic=rng.random() < 0.5)


def _read(p: StateProvider, sid: str, rng: random.Random) -> Any:
    return p.get_variables(
        sid, rng.sample(NAMES[:4], 2) + (["missing"] if rng.random() < 0.2 else [])
    )


def _history(p: StateProvider, sid: str, rng: random.Random) -> Any:
    return p.get_history(sid, rng.choice(NAMES), limit=rng.choice((None, 0, 2)))


def _rollback(p: StateProvider, sid: str, rng: random.Random) -> Any:
    return p.rollback_variable(sid, rng.choice(NAMES), rng.randint(1, 6))


def _depend(p: StateProvider, sid: str, rng: random.Random) -> Any:
    upstream, downstream = rng.sample(NAMES, 2)
    p.add_dependency(sid, upstream, downstream)
    return p.get_dependencies(sid)


def _dependents(p: StateProvider, sid: str, rng: random.Random) -> Any:
    return p.get_dependents(sid, rng.choice(NAMES))


def _lock(p: StateProvider, sid: str, rng: random.Random) -> Any:
    owner = rng.choice(OWNERS)
    name = rng.choice(NAMES)
    if rng.random() < 0.6:
        return p.release_lock(sid, name, owner=owner)
    return p.acquire_lock(sid, name, owner=owner, optimizer_id=f"opt-{owner}", lease=60.0)


def _list(p: StateProvider, sid: str, rng: random.Random) -> Any:
    return p.list_variables(sid, rng.choice(("*", "[tn]", "zz*")))


def _delete(p: StateProvider, sid: str, rng: random.Random) -> Any:
    name = rng.choice(NAMES)
    p.delete_variable(sid, name)
    spec, initial = SPECS.get(name, SPECS["t"])
    return p.register_variable(sid, name, spec, initial)


STEP_KINDS: tuple[Step, ...] = (_set, _set, _set, _update, _read, _history, _rollback, _depend,
                                 _dependents, _lock, _list, _delete)  # fmt: skip


def transcript(provider: StateProvider, seed: int) -> list[Any]:
    """Run the seeded workload on a fresh session and return everything it observed."""
    rng = random.Random(seed)
    sid = provider.create_session(f"agreement-{seed}")
    seen: list[Any] = [_observe(provider.get_session(sid).revision)]
    for name, (spec, initial) in SPECS.items():
        seen.append(
            _observe(provider.register_variable(sid, name, spec, initial, metadata={"k": name}))
        )
    for _ in range(STEPS):
        step = rng.choice(STEP_KINDS)
        try:
            seen.append((step.__name__, _observe(step(provider, sid, rng))))
        except errors.DspexError as exc:
            seen.append((step.__name__, _observe(exc)))
    seen.append(("log", _observe(full_log(provider, sid))))
    provider.close_session(sid)
    return seen


@pytest.fixture(name="redis_url")
def _redis_url(request: pytest.FixtureRequest, engine: str) -> str | None:
    if engine != "redis":
        return None
    return str(request.getfixturevalue("redis_server").url)


@pytest.mark.parametrize("engine", ENGINE_KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_direct_and_proxied_access_agree(engine: str, seed: int, redis_url: str | None) -> None:
    with provide(f"local-{engine}", redis_url=redis_url) as direct:
        expected = transcript(direct, seed)
    with provide(f"store-{engine}", redis_url=redis_url) as proxied:
        observed = transcript(proxied, seed)
    assert len(observed) == len(expected)
    for index, (want, got) in enumerate(zip(expected, observed, strict=True)):
        assert got == want, f"step {index} differs: direct {want!r}, through the store {got!r}"
