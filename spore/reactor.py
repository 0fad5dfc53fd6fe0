"""The event loop ``spore`` runs on: Twisted's epoll reactor, with less work per event.

Twisted's ``EPollReactor`` hands every ready descriptor to its handler
through ``log.callWithLogger``, which copies a logging context (the
descriptor's ``logPrefix()``, for ``twisted.python.log`` calls made while it
is handled) and passes the call down four more Python frames.  A tunnel does
little per event (read what came, write it to the other side), so on the
per-visitor path that was 13 of 36 microseconds of CPU per round trip in
each of the tunnel's two processes (``bench/interactive.py``, held
connections; PROFILE.md).

``SporeReactor`` calls ``doRead`` at once for an event that is a plain
read, ``doWrite`` for one that is a plain write (a connect that completed,
a full buffer that drained), and hands everything else (a hang-up, an
error, both at once) to Twisted's own handler as before.  An exception from
either is logged inside the descriptor's logging context, as Twisted logs
it, and the descriptor is disconnected with it.  ``twisted.logger`` events
are the same either way; only a ``twisted.python.log.msg`` made from inside
a read or write handler is logged without the descriptor's prefix as its
system.

Between two polls Twisted's main loop runs its timer bookkeeping
(``runUntilCurrent``, ``timeout``, each looking for new and due timers, and a
failure handler around them): ten Python calls, 1.3 of the 1.6 microseconds a
turn takes when there is nothing to do.  ``SporeReactor``'s loop looks first
whether anything is there (a new timer, a due one, a call from another
thread, a stop) and only then runs them; otherwise it goes straight back to
the poll, sleeping until the first timer is due.

This is the one place that leans on the reactor's private parts (epoll's
``_poller``, ``_selectables``, ``_doReadOrWrite``, ``_disconnectSelectable``;
the timers' ``_newTimedCalls``, ``_pendingTimedCalls``, ``threadCallQueue``,
``_justStopped``, ``_started``); ``tests/test_reactor.py`` fails if a Twisted
upgrade changes them.  ``spore`` installs it where epoll exists (Linux),
``twist --reactor=spore`` chooses it for ``twist``, and anywhere else
Twisted's default reactor runs Spore unchanged.
"""

from __future__ import annotations

import sys

from twisted.logger import Logger
from twisted.python import log
from twisted.python.failure import Failure

try:
    from select import EPOLLIN, EPOLLOUT

    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # not Linux
    EPollReactor = None


def available() -> bool:
    """Whether this platform has epoll, which ``SporeReactor`` is built on."""
    return EPollReactor is not None


if available():

    class SporeReactor(EPollReactor):
        """``EPollReactor`` that calls ``doRead`` or ``doWrite`` straight away for a plain read or write event."""

        def doPoll(self, timeout: float | None) -> None:
            try:
                events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
            except InterruptedError:
                return
            selectables = self._selectables
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                if event == EPOLLIN:
                    handle, reading = selectable.doRead, True
                elif event == EPOLLOUT:
                    handle, reading = selectable.doWrite, False
                else:
                    log.callWithLogger(selectable, self._doReadOrWrite, selectable, fd, event)
                    continue
                try:
                    why = handle()
                except BaseException:
                    why = sys.exc_info()[1]
                    log.callWithLogger(selectable, log.err, Failure())
                if why:
                    self._disconnectSelectable(selectable, why, reading)

        doIteration = doPoll

        def mainLoop(self) -> None:
            """Twisted's main loop, without the timers' bookkeeping on a turn where no timer is new or due."""
            while self._started:
                with _main_loop_failures:
                    while self._started:
                        now = self.seconds()
                        pending = self._pendingTimedCalls
                        if (
                            self._newTimedCalls or self.threadCallQueue or self._justStopped
                            or (pending and pending[0].time <= now)
                        ):
                            self.runUntilCurrent()
                            timeout = self.timeout()
                        elif pending:
                            timeout = min(pending[0].time - now, _LONGEST_POLL)
                        else:
                            timeout = None
                        self.doIteration(timeout if self.running else 0)
            _log.info("Main loop terminated.")

    _log = Logger()
    _main_loop_failures = _log.failureHandler("Unexpected error in main loop")
    _LONGEST_POLL = 2147483  # seconds: epoll_wait's timeout is an int of milliseconds (Twisted's limit too)


def install() -> None:
    """Install ``SporeReactor`` as Twisted's reactor (``twist --reactor=spore`` calls this)."""
    from twisted.internet.main import installReactor

    installReactor(SporeReactor())
