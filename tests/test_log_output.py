"""The log's lines: the same text as Twisted's observer, written together."""

from __future__ import annotations

import io

import pytest
from twisted.internet.task import Clock
from twisted.logger import FileLogObserver, LogLevel, formatEvent, textFileLogObserver
from twisted.python.failure import Failure

from spore.log_output import CoalescingStream, LogOutput, format_line


def twisted_line(event: dict) -> str:
    out = io.StringIO()
    textFileLogObserver(out)(event)
    return out.getvalue()


def event(log_format: str | None, **fields) -> dict:
    base = {"log_namespace": "spore.server.Tunnel", "log_level": LogLevel.info, "log_time": 1764626400.25}
    return {**base, "log_format": log_format, **fields}


class Shouting:
    name = "shouting"

    def __repr__(self) -> str:
        return "SHOUT"


def failure_event() -> dict:
    try:
        1 / 0
    except ZeroDivisionError:
        return event("while {what}", what="dividing", log_failure=Failure())


@pytest.mark.parametrize("e", [
    event("visitor {visitor} connected to port {port} as {id}", visitor="127.0.0.1:5000", port=20345, id="x"),
    event("{n:5d}|{f:.2f}|{o!r}|{o.name}", n=42, f=3.14159, o=Shouting()),
    event("two\nlines {x}", x="and\nthree"),
    event("no fields"),
    event("{missing} field"),  # Twisted writes its "Unable to format event" text
    event("called {f()}", f=lambda: "yes"),  # Twisted's call syntax
    event("a {system}", log_system="my system", system="s"),
    event("no level", log_level=None),
    event("no time", log_time=None),
    event(None, other="fields only"),
    failure_event(),
], ids=lambda e: str(e["log_format"]))
def test_lines_are_twisteds(e):
    assert (format_line(e) or "") == twisted_line(e)


def test_the_timestamp_follows_the_clock():
    first, later = event("a", log_time=1764626400.9), event("a", log_time=1764626401.1)
    assert format_line(first) == twisted_line(first)
    assert format_line(later) == twisted_line(later)
    assert format_line(first) != format_line(later)


def test_a_call_is_made_once():
    calls = []
    line = format_line(event("{f()}", f=lambda: calls.append(1) or "done"))
    assert line.endswith("] done\n") and calls == [1]
    assert formatEvent(event("{n}", n=1)) == "1"


def test_lines_wait_to_share_one_write():
    clock, out = Clock(), io.StringIO()
    stream = CoalescingStream(out, clock, delay=0.1, in_clock_thread=lambda: True)
    for n in range(3):
        stream.write(f"line {n}\n")
        stream.flush()
        clock.advance(0.03)
    assert out.getvalue() == ""
    clock.advance(0.011)  # 0.1 s after the first
    assert out.getvalue() == "line 0\nline 1\nline 2\n"
    assert not clock.getDelayedCalls()


def test_flush_now_writes_everything_and_cancels_the_wait():
    clock, out = Clock(), io.StringIO()
    stream = CoalescingStream(out, clock, in_clock_thread=lambda: True)
    stream.write("last words\n")
    stream.flush()
    stream.flush_now()
    assert out.getvalue() == "last words\n"
    assert not clock.getDelayedCalls()
    stream.flush_now()
    assert out.getvalue() == "last words\n"


def test_outside_the_clocks_thread_lines_are_written_at_once():
    clock, out = Clock(), io.StringIO()
    stream = CoalescingStream(out, clock, in_clock_thread=lambda: False)
    stream.write("from a thread\n")
    stream.flush()
    assert out.getvalue() == "from a thread\n"
    assert not clock.getDelayedCalls()


def output(least=LogLevel.info, wanted=lambda event: True):
    clock, out = Clock(), io.StringIO()
    stream = CoalescingStream(out, clock, in_clock_thread=lambda: True)
    return LogOutput(FileLogObserver(stream, format_line), stream, least, wanted), out, clock


def test_events_below_the_level_or_without_level_or_namespace_are_dropped():
    observe, out, clock = output(least=LogLevel.info, wanted=lambda event: "secret" not in event["log_format"])
    observe(event("kept"))
    observe(event("too small", log_level=LogLevel.debug))
    observe(event("no level", log_level=None))
    observe(event("no namespace", log_namespace=""))
    observe(event("a secret"))
    clock.advance(1)
    assert [line.split("] ", 1)[1] for line in out.getvalue().splitlines()] == ["kept"]


def test_a_warning_is_written_at_once_with_what_waited_before_it():
    observe, out, clock = output()
    observe(event("first"))
    assert out.getvalue() == ""
    observe(event("trouble", log_level=LogLevel.warn))
    assert [line.split("] ", 1)[1] for line in out.getvalue().splitlines()] == ["first", "trouble"]
    assert not clock.getDelayedCalls()
