"""Real processes and a real browser for the dashboard tests.

``DashboardProcess`` runs ``dspex dashboard --store ADDRESS --port 0 FLAGS`` as a child process
and reads the URL it prints; ``chromium()`` launches Debian's headless Chromium through
Playwright (``executable_path``: Playwright's own browser downloads are never used);
``save_screenshot()`` saves one where the end of the test run names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.serve_process import DSPEX

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT = 30.0


SAVED_ARTIFACTS: list[Path] = []
"""Files the tests saved, named at the end of the run (see conftest.py)."""


def save_screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under $DSPEX_TEST_ARTIFACTS (else a tmp folder)."""
    default = Path(tempfile.gettempdir()) / "dspex-test-artifacts"
    folder = Path(os.environ.get("DSPEX_TEST_ARTIFACTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    SAVED_ARTIFACTS.append(path)
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Debian's package), or skip with the way to install it."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Debian's chromium: apt-get install chromium (make test-deps does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class DashboardProcess:
    """One ``dspex dashboard`` child process on a free loopback port."""

    def __init__(self, store: str, *flags: str) -> None:
        self.args = [DSPEX, "dashboard", "--store", store, "--port", "0", *flags]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> DashboardProcess:
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = first_line(self.process, START_TIMEOUT)
        if line.startswith("{"):
            line = "dspex dashboard on " + json.loads(line)["url"]  # with --json
        if not line.startswith("dspex dashboard on "):
            self.process.kill()
            _, errors = self.process.communicate(timeout=30)
            raise RuntimeError(f"dspex dashboard did not start: {line!r} {errors}")
        self.url = line.split()[-1]
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful); returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        finally:
            self.process.communicate()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line the process prints on stdout, or "" after ``timeout`` seconds."""
    found: list[str] = []
    reader = threading.Thread(
        target=lambda: found.append(process.stdout.readline()),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    reader.join(timeout)
    return found[0].strip() if found else ""


def http(url: str, *, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET (or POST a JSON ``body``) and return the status and the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def auth_file(directory: Path, rules: list[dict[str, Any]], tokens: dict[str, str]) -> Path:
    """An ``--auth-file`` with one principal per token and these rules."""
    path = directory / "auth.json"
    principals = {name: {"token": token} for name, token in tokens.items()}
    path.write_text(json.dumps({"principals": principals, "rules": rules}))
    return path
