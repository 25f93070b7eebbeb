"""Provider kinds agree on every sequence: a hypothesis state machine runs one random sequence of
verbs on the reference kind (``local-memory``) and on one other kind, and after every step
compares all a caller can observe: the step's result or error (class, code, details), each
session's summary, the variables, their histories, the dependency edges and what a watch opened
at the start has delivered so far (observations: tests/support/statediff.py).

The contract suite checks each verb by example; this catches a *sequence* on which two kinds
disagree. Runs are derandomized (reproducible in CI); ``DSPEX_STATEDIFF_EXAMPLES=500`` runs a
longer, random search locally.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support import wait_until
from support.providers import PROVIDER_KINDS, engine_of, provide
from support.statediff import Outcome, attempt, drain, error

from dspex._model import Choice, VariableSpec, make_spec
from dspex.state import StateProvider, VariableWatch, current_lock_owner

REFERENCE = "local-memory"
OTHER_KINDS = [kind for kind in PROVIDER_KINDS if kind != REFERENCE]

NAMES = ("a", "b", "c", "d")
SPECS: tuple[VariableSpec, ...] = (
    make_spec(float, min=0.0, max=2.0),
    make_spec(int, min=0, max=10),
    make_spec(str, max_length=5, pattern="^[a-z]*$"),
    make_spec(bool),
    make_spec(Choice("x", "y")),
    make_spec(list),
    make_spec(dict, max_length=40),
    make_spec("embedding", dimensions=2),
    make_spec(str, choices=("x", "abc")),
    VariableSpec("float", {"bogus": 1}),  # specs not from make_spec: the provider re-checks
    VariableSpec("nope"),
    VariableSpec("float", {"min": 3.0, "max": 1.0}),
    VariableSpec("string", {"pattern": "("}),
)
VALUES: tuple[Any, ...] = (0.5, 1, 1.5, 3.5, -1, 7, 2.5, "x", "y", "abc", "toolong", "AB", True,
                           None, {1, 2}, [1, 2], [0.5, 1.5], {"k": [1, 2]}, [])  # fmt: skip
METADATA: tuple[Any, ...] = (None, {"k": 1}, {"nested": {"a": [1, 2]}}, {1: "x"}, {"f": {1, 2}})
OWNERS = (None, "token-a", "token-b")
SLOTS = ("main", "alt")

EXAMPLES = int(os.environ.get("DSPEX_STATEDIFF_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=EXAMPLES or 10,
    stateful_step_count=30,
    deadline=None,
    derandomize=not EXAMPLES,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

names = st.sampled_from(NAMES)
values = st.sampled_from(VALUES)
owners = st.sampled_from(OWNERS)
slots = st.sampled_from(SLOTS)


def _sendable(value: Any) -> bool:
    return not isinstance(value, set)


def _refused_before_sending(want: Any, got: Any) -> bool:
    """Whether ``got`` differs from ``want`` only where a client refused a value it cannot
    encode (``VariableTypeError``; in an atomic batch the other names then show
    ``BatchUpdateError``) and the reference refused the same thing for another reason first
    (the session is not open, no such variable...), per name in a batch's results.

    A client checks what it sends before the call reaches the store, where the session and the
    variable's spec live, so when a call has two faults the two kinds name them in a different
    order; both refuse and neither applies anything (the state checks after the step show
    that). The refusal's details are still compared when it is the only fault.
    """
    if want == got:
        return True
    if want[0] == "error" and got[0] == "error":
        return got[1][0] in ("VariableTypeError", "BatchUpdateError")
    if want[0] == got[0] == "ok" and isinstance(want[1], dict) and isinstance(got[1], dict):
        return want[1].keys() == got[1].keys() and all(
            _refused_before_sending(want[1][key], got[1][key]) for key in want[1]
        )
    return False


class Twin:
    """One side of the comparison: a provider, the sessions' ids and a watch on "main"."""

    def __init__(self, provider: StateProvider, prefix: str) -> None:
        self.provider = provider
        self.ids = {slot: f"{prefix}-{slot}" for slot in SLOTS}
        self.watch: VariableWatch | None = None
        self.seen: list[Any] = []


def _register(
    name: str, spec: VariableSpec, value: Any, metadata: Any
) -> Callable[[StateProvider, dict[str, str]], Any]:
    """The call registering ``name`` in the main session (for :meth:`ProviderDiff.both`)."""
    return lambda p, ids: p.register_variable(ids["main"], name, spec, value, metadata=metadata)


def _replay(
    twin: Twin, names: tuple[str, ...], after: int | None, initial: bool, *, want: int
) -> Outcome:
    """What a watch opened now on ``twin``'s main session delivers (at least ``want`` updates,
    waited for within a bound), or the error opening it raised."""
    try:
        opened = twin.provider.watch_variables(
            twin.ids["main"], names, after_revision=after, include_initial=initial
        )
    except Exception as exc:
        return ("error", error(exc))
    updates: list[Any] = []
    with opened:
        drain(opened, updates, want=want, more=0.05)
    return ("ok", updates)


class ProviderDiff(RuleBasedStateMachine):
    """Runs each verb on both twins and asserts the same observations (the test sets the
    providers per kind in a subclass; each run uses sessions of its own)."""

    reference: ClassVar[StateProvider]
    other: ClassVar[StateProvider]
    cached: ClassVar[bool] = False
    """The other kind reads through a cache, which catches up through its watch."""
    steps = 0

    def __init__(self) -> None:
        super().__init__()
        prefix = uuid.uuid4().hex[:10]
        self.twins = (Twin(self.reference, prefix), Twin(self.other, prefix))

    # -- running one call on both sides ------------------------------------------------------

    def both(self, call: Callable[[StateProvider, dict[str, str]], Any], *,
             owner: str | None = None, sendable: bool = True) -> Outcome:  # fmt: skip
        """Run ``call`` on each twin (as lock ``owner``) and assert the same outcome
        (``sendable=False``: the call carries a value no client can encode)."""
        outcomes = []
        for twin in self.twins:
            token = current_lock_owner.set(owner)
            try:
                outcomes.append(attempt(lambda t=twin: call(t.provider, t.ids)))  # type: ignore[misc]
            finally:
                current_lock_owner.reset(token)
        want, got = outcomes
        self.steps += 1
        if sendable is False and _refused_before_sending(want, got):
            return want
        assert got == want, f"reference {want!r}\n    other {got!r}"
        return want

    # -- sessions --------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        """The main session, watched from the start, with one variable per name (so most
        steps act on something; ``delete`` and ``register`` change that)."""
        self.both(lambda p, ids: p.create_session(ids["main"]))
        for twin in self.twins:
            twin.watch = twin.provider.watch_variables(twin.ids["main"])
        for name, spec, value in zip(NAMES, SPECS, (0.5, 1, "x", True), strict=False):
            self.both(_register(name, spec, value, {"role": name}))

    @rule(slot=slots, ttl=st.sampled_from((None, 600.0)), close=st.booleans())
    def create_or_close(self, slot: str, ttl: float | None, close: bool) -> None:
        """Create (or join) a session, or close the second one (main: :meth:`close_main`)."""
        if close and slot == "alt":
            self.both(lambda p, ids: p.close_session(ids["alt"]))
        else:
            self.both(lambda p, ids: p.create_session(ids[slot], ttl=ttl))

    @precondition(lambda self: self.steps >= 20)
    @rule()
    def close_main(self) -> None:
        """Late in a run only: every later step then meets a closed session."""
        self.both(lambda p, ids: p.close_session(ids["main"]))

    @rule(slot=slots)
    def heartbeat(self, slot: str) -> None:
        self.both(lambda p, ids: p.heartbeat(ids[slot]))

    # -- variables -------------------------------------------------------------------------

    @rule(
        name=names, spec=st.sampled_from(SPECS), value=values, metadata=st.sampled_from(METADATA)
    )
    def register(self, name: str, spec: VariableSpec, value: Any, metadata: Any) -> None:
        self.both(_register(name, spec, value, metadata),
                  sendable=_sendable(value))  # fmt: skip

    @rule(name=names, spec=st.sampled_from(SPECS[:9]))
    def register_valid(self, name: str, spec: VariableSpec) -> None:
        initial = {"float": 0.5, "integer": 1, "string": "x", "boolean": True, "choice": "x",
                   "json": [1, 2], "embedding": [0.5, 1.5]}[spec.type]  # fmt: skip
        if spec.type == "json" and "max_length" in spec.constraints:
            initial = {"k": [1, 2]}
        self.both(_register(name, spec, initial, None))

    @rule(name=names, value=values, expected=st.sampled_from((None, None, 1, 2, 3)),
          owner=owners)  # fmt: skip
    def set(self, name: str, value: Any, expected: int | None, owner: str | None) -> None:
        self.both(
            lambda p, ids: p.set_variable(ids["main"], name, value, expected_version=expected),
            owner=owner,
            sendable=_sendable(value),
        )

    @rule(name=names, owner=owners)
    def set_current_version(self, name: str, owner: str | None) -> None:
        """A write with ``expected_version`` the current version (read on each side)."""

        def call(p: StateProvider, ids: dict[str, str]) -> Any:
            record = p.get_variable(ids["main"], name)
            return p.set_variable(ids["main"], name, record.value,
                                  expected_version=record.version)  # fmt: skip

        self.both(call, owner=owner)

    @rule(items=st.dictionaries(st.sampled_from((*NAMES, "zz")), values, min_size=1, max_size=3),
          atomic=st.booleans(), owner=owners)  # fmt: skip
    def update(self, items: dict[str, Any], atomic: bool, owner: str | None) -> None:
        self.both(lambda p, ids: p.update_variables(ids["main"], items, atomic=atomic),
                  owner=owner, sendable=all(map(_sendable, items.values())))  # fmt: skip

    @rule(name=names, owner=owners)
    def delete(self, name: str, owner: str | None) -> None:
        self.both(lambda p, ids: p.delete_variable(ids["main"], name), owner=owner)

    @rule(name=names, version=st.integers(0, 6), owner=owners)
    def rollback(self, name: str, version: int, owner: str | None) -> None:
        self.both(lambda p, ids: p.rollback_variable(ids["main"], name, version), owner=owner)

    @rule(name=names, limit=st.sampled_from((None, 0, 1, 3)))
    def history(self, name: str, limit: int | None) -> None:
        self.both(lambda p, ids: p.get_history(ids["main"], name, limit=limit))

    @rule(picked=st.lists(st.sampled_from((*NAMES, "zz")), min_size=1, max_size=3))
    def read(self, picked: list[str]) -> None:
        self.both(lambda p, ids: p.get_variables(ids["main"], picked))
        self.both(lambda p, ids: p.get_variable(ids["main"], picked[0]))

    @rule(pattern=st.sampled_from(("*", "[ab]", "z*", "?")))
    def list_variables(self, pattern: str) -> None:
        self.both(lambda p, ids: p.list_variables(ids["main"], pattern))

    # -- locks -----------------------------------------------------------------------------

    @rule(name=names, owner=st.sampled_from(OWNERS[1:]),
          policy=st.sampled_from(("fail", "fail", "preempt", "bogus")),
          lease=st.sampled_from((600.0, 600.0, 0.0)))  # fmt: skip
    def acquire(self, name: str, owner: str, policy: str, lease: float) -> None:
        self.both(lambda p, ids: p.acquire_lock(ids["main"], name, owner=owner,
                                                optimizer_id=f"opt-{owner}", lease=lease,
                                                policy=policy))  # fmt: skip

    @rule(name=names, owner=st.sampled_from(OWNERS[1:]))
    def release(self, name: str, owner: str) -> None:
        self.both(lambda p, ids: p.release_lock(ids["main"], name, owner=owner))

    @rule(name=names, owner=st.sampled_from(OWNERS[1:]),
          progress=st.sampled_from((None, {"trial": 1}, {"best": 0.5})))  # fmt: skip
    def renew(self, name: str, owner: str, progress: dict[str, Any] | None) -> None:
        self.both(lambda p, ids: p.renew_lock(ids["main"], name, owner=owner, progress=progress))

    # -- dependencies ----------------------------------------------------------------------

    @rule(upstream=names, downstream=st.sampled_from((*NAMES, "zz")))
    def depend(self, upstream: str, downstream: str) -> None:
        self.both(lambda p, ids: p.add_dependency(ids["main"], upstream, downstream))

    @rule(name=st.sampled_from((*NAMES, "zz")))
    def dependents(self, name: str) -> None:
        self.both(lambda p, ids: p.get_dependents(ids["main"], name))

    # -- watches opened later -------------------------------------------------------------

    @rule(after=st.sampled_from((None, 0, 1, 3, 99)), initial=st.booleans(),
          picked=st.sampled_from(((), ("a",), ("a", "zz"))))  # fmt: skip
    def replay(self, after: int | None, initial: bool, picked: tuple[str, ...]) -> None:
        """A watch opened now (resumed, with initial records, filtered): the same updates."""
        reference, other = self.twins
        args = (picked, after, initial)
        want = _replay(reference, *args, want=0)
        got = _replay(other, *args, want=len(want[1]) if want[0] == "ok" else 0)
        assert got == want, f"replay: reference {want!r}\n other {got!r}"

    # -- after every step ------------------------------------------------------------------

    def state(self, twin: Twin) -> list[Outcome]:
        """Every read of ``twin``'s sessions that a step may have changed."""
        p, main, ids = twin.provider, twin.ids["main"], set(twin.ids.values())
        seen = [attempt(partial(p.get_session, sid)) for sid in twin.ids.values()]
        seen.append(attempt(lambda: [i for i in p.list_sessions() if i.session_id in ids]))
        seen += [
            attempt(partial(p.list_variables, main)),
            attempt(partial(p.get_dependencies, main)),
        ]
        seen += [attempt(partial(p.get_history, main, name)) for name in NAMES]
        return seen

    @invariant()
    def same_state(self) -> None:
        reference, other = self.twins
        want = self.state(reference)
        if self.cached:  # the cache catches up with the store through its watch: wait for it
            wait_until(lambda: self.state(other) == want, timeout=5.0)
        got = self.state(other)
        for index, (expected, observed) in enumerate(zip(want, got, strict=True)):
            assert observed == expected, (
                f"read {index}: reference {expected!r}\n other {observed!r}"
            )

    @invariant()
    def same_updates(self) -> None:
        reference, other = self.twins
        if reference.watch is None or other.watch is None:
            return
        drain(reference.watch, reference.seen)
        drain(other.watch, other.seen, want=len(reference.seen))
        assert other.seen == reference.seen, (
            f"watch: reference {reference.seen[-3:]!r}\n other {other.seen[-3:]!r}"
        )

    def teardown(self) -> None:
        reference, other = self.twins
        if reference.watch is not None and other.watch is not None:  # late extra updates
            drain(other.watch, other.seen, more=0.2)
            assert other.seen == reference.seen, f"watch at the end: other {other.seen[-3:]!r}"
        for twin in self.twins:
            if twin.watch is not None:
                twin.watch.cancel()
            for sid in twin.ids.values():
                try:
                    twin.provider.close_session(sid)
                except Exception:
                    pass


@pytest.fixture(name="redis_url")
def _redis_url(request: pytest.FixtureRequest, kind: str) -> str | None:
    if engine_of(kind) != "redis":
        return None
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture(name="pair")
def _pair(kind: str, redis_url: str | None) -> Iterator[tuple[StateProvider, StateProvider]]:
    with ExitStack() as stack:
        reference = stack.enter_context(provide(REFERENCE))
        other = stack.enter_context(provide(kind, redis_url=redis_url))
        yield reference, other


@pytest.mark.timeout(600 if EXAMPLES else 120)
@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_kinds_agree_on_every_sequence(
    kind: str, pair: tuple[StateProvider, StateProvider]
) -> None:
    reference, other = pair
    machine = type(
        "ProviderDiffRun",
        (ProviderDiff,),
        {"reference": reference, "other": other, "cached": kind.startswith("cached")},
    )
    run_state_machine_as_test(machine, settings=SETTINGS)
