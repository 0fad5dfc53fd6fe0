"""How ``spore`` writes its log: Twisted's classic text lines, made cheaply.

The default log names every visitor's arrival and claim, as bore's does, so
each line is on a tunnel's per-visitor path.  Twisted's ``textFileLogObserver``
formats an event with ``string.Formatter`` (pure Python), timestamps it with a
time-zone lookup and ``strftime``, and writes and flushes it on its own: on a
busy server that was a fifth of the CPU spent per visitor.  ``format_line``
writes the same line with ``str.format_map`` and a timestamp made once a
second, and ``CoalescingStream`` gathers the lines of a short while into one
write.  Events this fast path cannot format exactly as Twisted would (a
failure's traceback, the ``{call()}`` syntax, a missing field) go through
Twisted's own formatter.  A warning or worse is written at once, with
whatever waited before it.
"""

from __future__ import annotations

from datetime import datetime
from typing import IO, Any, Callable

from twisted.logger import ILogObserver, LogLevel, formatEventAsClassicLogText, timeFormatRFC3339
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

COALESCE_FOR = 0.1
"""Seconds a log line may wait for others to share its write."""


class _Timestamps:
    """``formatTime(when, timeFormatRFC3339)``, computed once per second."""

    second: int | None = None
    text = "-"

    def __call__(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self.second:
            self.second = second
            self.text = datetime.fromtimestamp(second).astimezone().strftime(timeFormatRFC3339)
        return self.text


_timestamp = _Timestamps()


def format_line(event: dict[str, Any]) -> str | None:
    """The event as ``textFileLogObserver`` would write it: ``"{time} [{system}] {message}\\n"``."""
    text = event.get("log_format")
    if text is None or "log_failure" in event:
        return formatEventAsClassicLogText(event, _timestamp)
    try:
        message = text.format_map(event)
    except Exception:  # a field it cannot find, or Twisted's "{call()}": Twisted knows what to write
        return formatEventAsClassicLogText(event, _timestamp)
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
    line = f"{_timestamp(event.get('log_time'))} [{system}] {message}"
    if "\n" in line:
        line = line.replace("\n", "\n\t")
    return line + "\n"


class CoalescingStream:
    """A text stream whose writes reach ``stream`` together, ``delay`` seconds after the first.

    Twisted's file observers flush after every event; here that flush only
    makes sure a write is on its way.  ``flush_now`` writes everything at
    once (at shutdown, at exit).
    """

    def __init__(self, stream: IO[str], clock, delay: float = COALESCE_FOR, in_clock_thread=isInIOThread) -> None:
        self.stream = stream
        self.clock = clock
        self.delay = delay
        self.in_clock_thread = in_clock_thread
        self._lines: list[str] = []
        self._scheduled = None

    def write(self, text: str) -> None:
        self._lines.append(text)

    def flush(self) -> None:
        if not self.in_clock_thread():  # another thread, or the reactor is not running yet
            self.flush_now()
        elif self._scheduled is None and self._lines:
            self._scheduled = self.clock.callLater(self.delay, self.flush_now)

    def flush_now(self) -> None:
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
        lines, self._lines = self._lines, []
        if lines:
            self.stream.write("".join(lines))
            self.stream.flush()


@implementer(ILogObserver)
class LogOutput:
    """Passes ``observer`` the events at least as severe as ``least`` that ``wanted`` accepts.

    The test of ``FilteringLogObserver`` with ``LogLevelFilterPredicate``
    (an event without a level or a namespace is dropped), without its
    per-namespace levels, which ``spore`` does not use.
    """

    def __init__(
        self,
        observer: ILogObserver,
        stream: CoalescingStream,
        least: LogLevel,
        wanted: Callable[[dict[str, Any]], bool] = lambda event: True,
    ) -> None:
        self.observer = observer
        self.stream = stream
        self.least = least
        self.wanted = wanted

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is None or level < self.least or not event.get("log_namespace") or not self.wanted(event):
            return
        self.observer(event)
        if level >= LogLevel.warn:
            self.stream.flush_now()
