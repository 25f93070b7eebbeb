"""The dashboard page in real headless Chromium, over real `dspex serve` and `dspex dashboard`.

Changes made from Python reach the open page over the watch stream (server-sent events) within
a second, without a reload; history plots gain points; optimizer progress and the dependency
graph show; the page loads nothing from anywhere but the dashboard. A screenshot is saved.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.dashboard import DashboardProcess, chromium, save_screenshot
from support.serve_process import ServeProcess

import dspex

pytestmark = pytest.mark.timeout(120)

WAIT_MS = 15_000  # for the first load (the machine may be busy); live updates get 1 s


def cell(name: str, column: str) -> str:
    return f'tr[data-name="{name}"] td.{column}'


def plot_points(name: str) -> str:
    """JS: the number of points in the history plot of ``name`` (0 before it is drawn)."""
    return (
        f"(() => {{ const d = document.querySelector('[data-plot=\"{name}\"]');"
        " return d && d.data ? d.data[0].x.length : 0; })()"
    )


def wait_text(page: Any, selector: str, text: str, timeout_ms: float) -> None:
    page.wait_for_function(
        "([s, t]) => { const n = document.querySelector(s); return n && n.textContent === t; }",
        arg=[selector, text],
        timeout=timeout_ms,
    )


def test_the_page_follows_the_store_live(tmp_path: Any) -> None:
    with ServeProcess() as store, dspex.Session(store=store.address) as session:
        session.register("temperature", float, 0.7, min=0.0, max=2.0)
        session.register("instructions", str, "Answer in one sentence.")
        session.register("budget", float, 7.0)
        session.depend("temperature", "budget")
        session.set("temperature", 0.5)
        with DashboardProcess(store.address) as dashboard, chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            requests: list[str] = []
            problems: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{dashboard.url}?session={session.session_id}")
            page.wait_for_function(f"{plot_points('temperature')} === 2", timeout=WAIT_MS)
            page.evaluate("window.loadedOnce = true")  # gone if the page ever reloads
            assert page.text_content(cell("temperature", "value")) == "0.5"
            assert page.text_content(cell("temperature", "version")) == "2"
            assert page.text_content(cell("temperature", "writer"))  # who wrote it
            assert page.locator("#status").text_content() == "live"
            # the edge temperature -> budget, drawn once the page has it
            page.wait_for_selector('#graph g[data-node="budget"]', timeout=WAIT_MS)

            started = time.monotonic()
            session.set("temperature", 0.25)
            wait_text(page, cell("temperature", "value"), "0.25", timeout_ms=1000)
            seen_after = time.monotonic() - started
            print(f"set -> shown on the page in {seen_after * 1000:.0f} ms")
            page.wait_for_function(f"{plot_points('temperature')} === 3", timeout=1000)
            assert page.text_content(cell("temperature", "version")) == "3"
            # budget went stale when its upstream changed: in the table and in the graph
            page.wait_for_selector(f"{cell('budget', 'stale')} .badge", timeout=1000)
            page.wait_for_selector('#graph g.stale[data-node="budget"]', timeout=1000)

            # strings plot as categories, labelled by their (shortened) text
            session.set("instructions", "Think step by step, then answer.")
            page.wait_for_function(f"{plot_points('instructions')} === 2", timeout=1000)
            markup = '<img src=x onerror="window.pwned=1"><b>bold</b>'
            session.set("instructions", markup)
            wait_text(page, cell("instructions", "value"), markup, timeout_ms=1000)
            page.wait_for_function(f"{plot_points('instructions')} === 3", timeout=1000)
            tick = page.text_content("[data-plot='instructions'] .ytick text >> nth=-1")
            assert page.evaluate("window.pwned") is None  # text, never markup
            assert tick is not None and tick.startswith("<img src=x")
            axis = page.evaluate(
                "document.querySelector('[data-plot=\"instructions\"]').layout.yaxis.type"
            )
            assert axis == "category"

            with session.optimizing("temperature", optimizer_id="grid") as lock:
                best, best_value = 0.0, None
                for step, (value, score) in enumerate(((0.1, 0.6), (0.3, 0.8), (0.9, 0.7))):
                    session.set("temperature", value)
                    if score > best:
                        best, best_value = score, value
                    lock.report(
                        iteration=step, score=score, best_score=best, best_value=best_value
                    )
                page.wait_for_selector(f"{cell('temperature', 'lock')} .badge", timeout=1000)
                assert "grid" in page.text_content(cell("temperature", "lock"))
                page.wait_for_function(
                    "(() => { const d = document.querySelector('[data-optimizer=\"grid\"]');"
                    " return d && d.data && d.data.some(t => t.x.length === 3); })()",
                    timeout=1000,
                )
                summary = page.text_content(".card:has([data-optimizer='grid']) .best")
                assert "best score 0.8" in summary and "best value 0.3" in summary
                assert "iteration 2" in summary
                page.wait_for_function(f"{plot_points('temperature')} === 6", timeout=1000)
                save_screenshot(page, "dashboard.png")
            page.wait_for_function(
                f"document.querySelector('{cell('temperature', 'lock')}').textContent === ''",
                timeout=1000,
            )

            # the same history against time: a date axis with the same points
            page.select_option("#xaxis", "time")
            page.wait_for_function(
                "document.querySelector('[data-plot=\"temperature\"]').layout.xaxis.type"
                " === 'date'",
                timeout=1000,
            )
            assert page.evaluate(plot_points("temperature")) == 6
            assert page.evaluate("window.loadedOnce") is True  # no reload happened
            assert problems == []
            assert requests and all(url.startswith(dashboard.url) for url in requests), requests
            assert seen_after < 1.0

            unknown = browser.new_page()  # a session id that is not open: said on the page
            unknown.goto(f"{dashboard.url}?session=no-such-session")
            unknown.wait_for_function(
                "document.querySelector('#banner').textContent.includes('no-such-session')",
                timeout=WAIT_MS,
            )
            assert unknown.text_content("#status") == "refused"
            assert dashboard.stop() == 0


def test_the_session_list_shows_sessions_opened_after_the_page_loaded() -> None:
    with ServeProcess() as store, dspex.Session(store=store.address) as first:
        first.register("temperature", float, 0.7)
        with DashboardProcess(store.address) as dashboard, chromium() as browser:
            page = browser.new_page()
            page.goto(f"{dashboard.url}?session={first.session_id}")
            page.wait_for_selector(
                f'#session option[value="{first.session_id}"]', state="attached", timeout=WAIT_MS
            )
            with dspex.Session(store=store.address) as second:
                second.register("top_k", int, 3)
                # no click, no reload: the list is re-read while the page is open
                page.wait_for_selector(
                    f'#session option[value="{second.session_id}"]', state="attached", timeout=8000
                )
                assert page.eval_on_selector("#session", "s => s.value") == first.session_id
            page.wait_for_function(
                f"!document.querySelector('#session option[value=\"{second.session_id}\"]')",
                timeout=8000,
            )
            assert page.locator("#status").text_content() == "live"
