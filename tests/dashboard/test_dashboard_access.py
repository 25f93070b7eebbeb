"""What a dashboard shows and may do follows its token, through a store with an auth file.

A viewer token that may observe and read only ``temp*`` sees only those variables and no
rollback; an operator token that may write gets a rollback button that writes a new version;
``--read-only`` hides it and the API refuses it; a request without the page's key is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.dashboard import DashboardProcess, auth_file, chromium, http
from support.serve_process import ServeProcess

import dspex

pytestmark = pytest.mark.timeout(120)

WAIT_MS = 15_000
TOKENS = {"owner": "owner-secret", "operator": "op-secret", "viewer": "view-secret"}
RULES = [
    {"principal": "owner", "sessions": "@own", "allow": ["read", "write", "observe", "optimize"]},
    {"principal": "operator", "sessions": "*", "allow": ["read", "write", "observe"]},
    {"principal": "viewer", "sessions": "*", "variables": "temp*", "allow": ["read", "observe"]},
]
ROW = 'tr[data-name="{}"]'


ROLLBACK_JS = """async ({name, version}) => {
    const key = document.querySelector('meta[name="dspex-key"]').content;
    const session = new URLSearchParams(location.search).get("session");
    const r = await fetch(`api/sessions/${session}/variables/${name}/rollback`, {
        method: "POST", body: JSON.stringify({version}), headers: {"X-Dspex-Dashboard": key}});
    return [r.status, (await r.json()).error];
}"""


def rows(page: Any) -> list[str]:
    return sorted(
        page.eval_on_selector_all("#variables tbody tr", "rs => rs.map(r => r.dataset.name)")
    )


def open_page(browser: Any, url: str, session_id: str) -> Any:
    page = browser.new_page()
    page.goto(f"{url}?session={session_id}")
    page.wait_for_selector(ROW.format("temperature"), timeout=WAIT_MS)
    return page


def test_the_token_decides_what_the_page_shows_and_may_roll_back(tmp_path: Path) -> None:
    auth = auth_file(tmp_path, RULES, TOKENS)
    with (
        ServeProcess("--auth-file", str(auth)) as store,
        dspex.Session(store=store.address, token=TOKENS["owner"]) as session,
    ):
        session.register("temperature", float, 0.7, min=0.0, max=2.0)
        session.register("secret_prompt", str, "internal")
        session.set("temperature", 0.2)
        sid = session.session_id
        with (
            DashboardProcess(store.address, "--token", TOKENS["viewer"]) as viewer,
            DashboardProcess(store.address, "--token", TOKENS["operator"]) as operator,
            DashboardProcess(
                store.address, "--token", TOKENS["operator"], "--read-only"
            ) as frozen,
            chromium() as browser,
        ):
            seen = open_page(browser, viewer.url, sid)
            ops = open_page(browser, operator.url, sid)
            readonly = open_page(browser, frozen.url, sid)
            ops.wait_for_selector(
                f"{ROW.format('temperature')} td.rollback button", timeout=WAIT_MS
            )

            assert rows(seen) == ["temperature"]  # secret_prompt is not observable
            assert rows(ops) == ["secret_prompt", "temperature"]
            assert seen.locator("td.rollback button").count() == 0  # may not write
            assert readonly.locator("td.rollback button").count() == 0  # --read-only

            ops.select_option(f"{ROW.format('temperature')} td.rollback select", "1")
            ops.click(f"{ROW.format('temperature')} td.rollback button")
            for page in (ops, seen):  # the new version reaches every page live
                page.wait_for_function(
                    "s => document.querySelector(s).textContent === '3'",
                    arg=f"{ROW.format('temperature')} td.version",
                    timeout=WAIT_MS,
                )
            record = session.variable("temperature")
            assert (record.value, record.version) == (0.7, 3)
            assert record.writer.startswith("operator@")

            refused = readonly.evaluate(ROLLBACK_JS, {"name": "temperature", "version": 2})
            assert refused[0] == 403 and "read-only" in refused[1]
            unknown = ops.evaluate(ROLLBACK_JS, {"name": "temperature", "version": 99})
            assert unknown[0] == 404 and "no version 99" in unknown[1]
            wrong = ops.evaluate(ROLLBACK_JS, {"name": "temperature", "version": "two"})
            assert wrong[0] == 400 and '{"version": N}' in wrong[1]
            url = f"{operator.url}api/sessions/{sid}/variables/temperature/rollback"
            status, body = http(url, body={"version": 2})  # without the page's key
            assert status == 403 and "X-Dspex-Dashboard" in body["error"]
            status, body = http(url, body={"version": "two"}, headers={"X-Dspex-Dashboard": "x"})
            assert status == 403  # the key is checked before anything else
            assert session.variable("temperature").version == 3  # nothing changed


def test_a_token_that_may_only_observe_sees_live_changes_of_a_named_session(
    tmp_path: Path,
) -> None:
    tokens = {"owner": TOKENS["owner"], "watcher": "watch-secret"}
    rules = [RULES[0], {"principal": "watcher", "sessions": "*", "allow": ["observe"]}]
    with (
        ServeProcess("--auth-file", str(auth_file(tmp_path, rules, tokens))) as store,
        dspex.Session(store=store.address, token=TOKENS["owner"]) as session,
    ):
        session.register("temperature", float, 0.7)
        session.register("budget", float, 7.0)
        session.depend("temperature", "budget")
        session.set("temperature", 0.2)
        flags = ("--token", tokens["watcher"], "--session", session.session_id)
        with DashboardProcess(store.address, *flags) as watcher, chromium() as browser:
            status, listed = http(f"{watcher.url}api/sessions")
            assert status == 200 and listed == [{"session_id": session.session_id}]
            page = browser.new_page()
            page.goto(watcher.url)  # the one session offered is followed
            page.wait_for_selector(ROW.format("temperature"), timeout=WAIT_MS)
            points = "document.querySelector('[data-plot=\"temperature\"]').data[0].x.length"
            page.wait_for_function(f"{points} === 1", timeout=WAIT_MS)  # history not readable
            session.set("temperature", 0.4)
            page.wait_for_function(f"{points} === 2", timeout=1000)  # but changes arrive
            assert rows(page) == ["budget", "temperature"]
            assert page.locator("td.rollback button").count() == 0
            assert page.locator("#graph g").count() == 0  # edges need read
            assert page.text_content("#banner") == ""
