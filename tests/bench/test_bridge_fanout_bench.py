"""The bridge bench's fan-out runs, small: the store's watch streams and the bare server's raw
subscriptions are driven alike, and every receiver must get every step (structure, not speed)."""

from __future__ import annotations

import grpc
import pytest

from dspex._model import make_spec
from dspex.bench import _bridge
from dspex.bench._raw_grpc import POKE, raw_server, unary
from dspex.state.store import SessionStoreProvider

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PER_PROCESS = 3
STEPS = 12


def test_raw_fanout_reaches_every_subscription_of_every_process() -> None:
    with raw_server() as raw:
        channel = grpc.insecure_channel(raw)
        try:
            last, poke_p50 = _bridge._raw_fanout(unary(channel, POKE), raw, PER_PROCESS, STEPS)
        finally:
            channel.close()
    assert poke_p50 > 0 and last > 0  # every subscription got every step, or it raised


def test_watch_fanout_and_its_raw_baseline_measure_the_same_steps() -> None:
    with _bridge._store_process() as address:
        client = SessionStoreProvider(address)
        try:
            sid = client.create_session()
            client.register_variable(sid, "w", make_spec(int), -1)
            last, set_p50 = _bridge._watch_fanout(
                client, address, sid, PER_PROCESS, shared=False, samples=STEPS
            )
        finally:
            client.close()
    assert set_p50 > 0 and last > 0  # every stream got every step, or it raised


def test_a_receiver_that_missed_a_step_fails_the_figure() -> None:
    arrivals = [[(0, 10), (1, 20)], [(0, 12)]]
    assert _bridge._last_arrival(arrivals, 0) == 12
    with pytest.raises(RuntimeError, match="never received update 1"):
        _bridge._last_arrival(arrivals, 1)
