"""Headless Chromium for the tests: the DOM a page ends up with, and a phone-sized screenshot of it.

Two ways to run it, for two kinds of server:

- :func:`render` blocks until Chromium is done: for a page served by another
  process (a real ``spore server``).
- :func:`render_async` runs Chromium as a child of the reactor
  (``spawnProcess``): for a page served by this process's own reactor, which
  must keep running meanwhile, or the page never loads.

Each run gets a fresh profile and a process group of its own, which is
killed at the end, so that no helper process of Chromium's outlives it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

CHROMIUM = "/usr/bin/chromium"
PHONE = "390,844"

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Loopback pages only: a proxy from the environment has no business here.
    "--no-proxy-server",
    "--virtual-time-budget=3000",
)


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None if they can (for ``pytest.mark.skipif``)."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    return None


class BrowserError(Exception):
    """Chromium failed, or took longer than it was given."""


def _dump_args(url: str) -> list[str]:
    return ["--dump-dom", url]


def _screenshot_args(url: str, screenshot: str, window: str) -> list[str]:
    return ["--hide-scrollbars", f"--screenshot={screenshot}", f"--window-size={window}", url]


@contextmanager
def _profile() -> Iterator[list[str]]:
    """Chromium's command line up to its own arguments, with a fresh profile removed afterwards."""
    profile = tempfile.mkdtemp(prefix="spore-chromium-")
    try:
        yield [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _check_screenshot(screenshot: str) -> None:
    if not os.path.exists(screenshot):
        raise BrowserError(f"chromium made no screenshot at {screenshot}")


def _last_words(stderr: bytes) -> str:
    return stderr.decode("utf-8", "replace")[-2000:]


# Blocking, for pages served by other processes.


def _run(args: list[str], timeout: float) -> bytes:
    with _profile() as command:
        process = subprocess.Popen(
            [*command, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            _, err = process.communicate()
            raise BrowserError(f"chromium took more than {timeout} s; its last words:\n{_last_words(err)}") from None
        finally:
            _kill_group(process.pid)  # helpers that outlived the browser
    if process.returncode != 0:
        raise BrowserError(f"chromium failed (exit code {process.returncode}); its last words:\n{_last_words(err)}")
    return out


def render(url: str, screenshot: str | None = None, timeout: float = 30, *, window: str = PHONE) -> str:
    """The DOM of ``url`` once its scripts have had 3 s (of virtual time) to run.

    With ``screenshot``, a second run saves a PNG of the page there, in a
    phone-sized window unless ``window`` ("WIDTH,HEIGHT") says otherwise.
    This blocks: the page must be served by another process (else use
    :func:`render_async`).
    """
    dom = _run(_dump_args(url), timeout)
    if screenshot is not None:
        _run(_screenshot_args(url, screenshot, window), timeout)
        _check_screenshot(screenshot)
    return dom.decode("utf-8")


# Within the reactor, for pages served by this process.


class _Chromium(ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[BaseException] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)  # the exception itself: a Failure would fire the errbacks


async def _spawn(reactor, args: list[str], timeout: float) -> bytes:
    # spawnProcess cannot start a session; setsid(1) can, and execs in place (the child leads no group).
    setsid = shutil.which("setsid")
    with _profile() as command:
        argv = [setsid, "--wait", *command, *args] if setsid else [*command, *args]
        chromium = _Chromium()
        process = reactor.spawnProcess(chromium, argv[0], argv, env=dict(os.environ))
        group = process.pid if setsid else None
        timed_out = []

        def kill() -> None:
            timed_out.append(True)
            if group is not None:
                _kill_group(group)
            else:
                try:
                    process.signalProcess("KILL")
                except ProcessExitedAlready:
                    pass

        timer = reactor.callLater(timeout, kill)
        try:
            reason = await chromium.ended
        finally:
            if timer.active():
                timer.cancel()
            if group is not None:
                _kill_group(group)  # helpers that outlived the browser
    stderr = _last_words(b"".join(chromium.err))
    if timed_out:
        raise BrowserError(f"chromium took more than {timeout} s; its last words:\n{stderr}")
    if not isinstance(reason, ProcessDone):
        raise BrowserError(f"chromium failed ({reason}); its last words:\n{stderr}")
    return b"".join(chromium.out)


async def render_async(
    url: str, screenshot: str | None = None, timeout: float = 30, *, window: str = PHONE, reactor=None
) -> str:
    """What :func:`render` gives, without blocking ``reactor`` (the global one if None) meanwhile."""
    if reactor is None:
        from twisted.internet import reactor
    dom = await _spawn(reactor, _dump_args(url), timeout)
    if screenshot is not None:
        await _spawn(reactor, _screenshot_args(url, screenshot, window), timeout)
        _check_screenshot(screenshot)
    return dom.decode("utf-8")
