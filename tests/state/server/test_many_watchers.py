"""The store holds 1,000 concurrent watch streams from several processes and loses no update.

Live watches of one client share one server stream per session, so each watch here resumes
from a revision (``after_revision``): that keeps 1,000 separate streams open at the server.
"""

from __future__ import annotations

import multiprocessing

import pytest
from support import wait_until
from support.bridge import child_watchers, served

from dspex._model import make_spec
from dspex.state import LocalProvider
from dspex.state.store import SessionStoreProvider

PROCESSES = 4
WATCHES_PER_PROCESS = 250
UPDATES = 40


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_thousand_watch_streams_get_every_update_in_order() -> None:
    local = LocalProvider()
    session_id = local.create_session()
    local.register_variable(session_id, "n", make_spec(int), -1)
    context = multiprocessing.get_context("spawn")
    with served(local) as server:
        pipes, processes = [], []
        for _ in range(PROCESSES):
            parent, child = context.Pipe()
            process = context.Process(
                target=child_watchers,
                args=(server.address, session_id, WATCHES_PER_PROCESS, UPDATES, child),
                daemon=True,
            )
            process.start()
            pipes.append(parent)
            processes.append(process)
        try:
            for parent in pipes:
                assert parent.poll(180), "a watcher process did not get ready"
                assert parent.recv() == "ready"
            total = PROCESSES * WATCHES_PER_PROCESS
            assert wait_until(lambda: server.watch_count == total, timeout=60)
            writer = SessionStoreProvider(server.address)
            for value in range(UPDATES):
                writer.set_variable(session_id, "n", value)
            writer.close()
            received = []
            for parent in pipes:
                assert parent.poll(300), "a watcher process did not report"
                received.extend(parent.recv())
        finally:
            for process in processes:
                process.join(30)
                if process.is_alive():
                    process.kill()
        assert len(received) == PROCESSES * WATCHES_PER_PROCESS
        expected = list(range(UPDATES))
        wrong = [index for index, got in enumerate(received) if got != expected]
        assert wrong == [], f"{len(wrong)} watchers missed or reordered updates"
        assert wait_until(lambda: server.watch_count == 0, timeout=60)
