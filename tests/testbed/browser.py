"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright's sync API.

Playwright's sync API marks its own asyncio loop as running in the thread that uses it, which
breaks every later async test of the session (pytest-asyncio runs them in a session loop on the
main thread). So Playwright lives in a thread of its own, and tests get proxies: ``browser``,
and every page or context made from it, can be used from any thread like the real objects
(``page = browser.new_page(); page.goto(url)``); each call runs in the Playwright thread.
Callbacks (``page.on(...)``) and ``browser.run(fn)`` receive the real objects in that thread.
From an async test, call it through ``await asyncio.to_thread(...)`` so the loop keeps running.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import subprocess
import threading
from pathlib import Path

import pytest

from .procs import pid_alive, stop_pid

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


class _Thread(threading.Thread):
    """The one thread that owns Playwright; ``call`` runs a function there and returns its result."""

    def __init__(self):
        super().__init__(name="playwright", daemon=True)
        self.jobs: queue.Queue = queue.Queue()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, args, kwargs, result = job
            try:
                result.set_result(fn(*args, **kwargs))
            except BaseException as e:  # handed to the caller's thread, raised there
                result.set_exception(e)

    def submit(self, fn, *args, **kwargs) -> concurrent.futures.Future:
        result = concurrent.futures.Future()
        self.jobs.put((fn, args, kwargs, result))
        return result

    def call(self, fn, *args, **kwargs):
        if threading.current_thread() is self:  # a callback already in this thread
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()


class Remote:
    """A Playwright object (or one of its methods) used from another thread."""

    def __init__(self, obj, thread: _Thread):
        self._obj, self._thread = obj, thread

    def _wrap(self, value):
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        if callable(value) or type(value).__module__.startswith("playwright."):
            return Remote(value, self._thread)
        return value

    def __getattr__(self, name: str):
        return self._wrap(self._thread.call(getattr, self._obj, name))

    def __call__(self, *args, **kwargs):
        args = [a._obj if isinstance(a, Remote) else a for a in args]
        kwargs = {k: v._obj if isinstance(v, Remote) else v for k, v in kwargs.items()}
        return self._wrap(self._thread.call(self._obj, *args, **kwargs))

    def __enter__(self):  # e.g. `with page.expect_navigation():`
        return self._wrap(self._thread.call(self._obj.__enter__))

    def __exit__(self, *exc):
        return self._thread.call(self._obj.__exit__, *exc)

    def __repr__(self) -> str:
        return f"Remote({self._obj!r})"

    def run(self, fn, *args, **kwargs):
        """Run ``fn(real_object, ...)`` in the Playwright thread (for ``expect`` and the like)."""
        return self._thread.call(fn, self._obj, *args, **kwargs)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(p.name))
    return tree


def descendants(*pids: int) -> set[int]:
    tree, found, todo = _children(), set(), list(pids)
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def trust_ca(home: Path, ca_cert: Path) -> None:
    """Chromium on Linux trusts the roots in $HOME/.pki/nssdb: put the test CA into a private one."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True,
                   capture_output=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{db}", "-n", "jhub-cloud test CA", "-t", "C,,",
                    "-i", str(ca_cert)], check=True, capture_output=True)


class Chromium:
    """Playwright + Chromium in their own thread; ``.browser`` is the (proxied) Browser."""

    def __init__(self, dir: Path, ca_cert: Path | None = None):
        self.dir, self.ca_cert = Path(dir), ca_cert
        self.thread = _Thread()
        self.pids: set[int] = set()
        self.browser: Remote | None = None
        self._playwright = None

    def start(self) -> Chromium:
        home = self.dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        if self.ca_cert:
            trust_ca(home, self.ca_cert)
        self.thread.start()
        before = descendants(os.getpid())
        browser = self.thread.call(self._launch, home)
        # The Playwright driver (node) and Chromium are our children: remember them by PID.
        self.pids = descendants(os.getpid()) - before
        self.browser = Remote(browser, self.thread)
        return self

    def _launch(self, home: Path):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        # Playwright gives each launch a fresh temporary profile (user-data dir) and deletes it
        # on close; HOME is ours so caches, config and the NSS trust store stay in the run dir.
        return self._playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, chromium_sandbox=False,
            env={**os.environ, "HOME": str(home)})

    def _close(self) -> None:
        try:
            if self.browser is not None:
                self.browser._obj.close()
        finally:
            if self._playwright is not None:
                self._playwright.stop()

    def stop(self) -> None:
        ours = self.pids | descendants(*self.pids)  # renderers started since launch too
        if self.thread.is_alive():
            # If a graceful close fails or hangs (a test left the thread busy), whatever is left
            # is stopped by PID below, which also ends the busy call.
            with contextlib.suppress(Exception):
                self.thread.submit(self._close).result(timeout=10)
            self.thread.jobs.put(None)
            self.thread.join(timeout=10)
        for pid in ours:
            if pid_alive(pid):
                stop_pid(pid, timeout=5)


@pytest.fixture(scope="session")
def browser(run_dir, pki) -> Remote:
    """Headless Chromium that trusts the test CA; make isolated sessions with ``new_context()``."""
    c = Chromium(run_dir / "browser", ca_cert=pki.ca_cert)
    try:
        c.start()
        yield c.browser
    finally:
        c.stop()
