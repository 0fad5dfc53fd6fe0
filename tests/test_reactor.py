"""The reactor ``spore`` runs on (spore.reactor), driven one poll at a time on real sockets.

Each test makes a ``SporeReactor`` of its own, never run, and calls its
``doPoll`` by hand, or its main loop for a few turns on a stopped clock with
a stand-in poll, so it fails if a Twisted upgrade changes the reactor's
private parts it uses, or what they do.  The rest of the suite
runs on it too (tests/conftest.py).
"""

from __future__ import annotations

import socket

import pytest
from twisted.application.reactors import getReactorTypes
from twisted.internet.abstract import FileDescriptor
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import CONNECTION_DONE
from twisted.python import log

from spore import reactor as spore_reactor

pytestmark = pytest.mark.skipif(not spore_reactor.available(), reason="epoll is Linux only")


class Descriptor(FileDescriptor):
    """A plain socket, recording what the reactor calls on it."""

    def __init__(self, reactor, sock: socket.socket, read=None) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.calls: list[str] = []
        self.lost = []
        self.read = read or (lambda: self.sock.recv(100) or CONNECTION_DONE)
        self.connected = True

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "the-descriptor"

    def doRead(self):
        self.calls.append("read")
        data = self.read()
        return data if data is CONNECTION_DONE else None

    def doWrite(self):
        self.calls.append("write")
        self.stopWriting()

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)
        super().connectionLost(reason)


@pytest.fixture
def poller():
    reactors = []

    def make(kind=spore_reactor.SporeReactor):
        made = kind()
        reactors.append(made)
        return made

    yield make
    for made in reactors:
        made._poller.close()
        made.waker.connectionLost(None)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_the_suite_and_spore_run_on_it(reactor):
    assert type(reactor) is spore_reactor.SporeReactor
    assert "spore" in {r.shortName for r in getReactorTypes()}  # twist --reactor=spore


def test_a_read_goes_straight_to_doRead(poller, pair, monkeypatch):
    made = poller()
    descriptor = Descriptor(made, pair[0])
    made.addReader(descriptor)
    pair[1].send(b"hello")
    contexts = []
    monkeypatch.setattr(log, "callWithLogger", lambda *a: contexts.append(a))
    made.doPoll(1)
    assert descriptor.calls == ["read"]
    assert contexts == []  # the cost this reactor exists to save
    assert descriptor.lost == []


def test_a_write_goes_straight_to_doWrite(poller, pair, monkeypatch):
    made = poller()
    descriptor = Descriptor(made, pair[0])
    made.addWriter(descriptor)
    monkeypatch.setattr(log, "callWithLogger", lambda *a: pytest.fail("went through callWithLogger"))
    made.doPoll(1)
    assert descriptor.calls == ["write"]
    assert descriptor not in made.getWriters()


def test_an_exception_while_writing_disconnects_as_a_write(poller, pair):
    made = poller()
    descriptor = Descriptor(made, pair[0])
    descriptor.doWrite = lambda: 1 / 0
    made.addWriter(descriptor)
    made.addReader(descriptor)  # nothing to read: the event is a plain write
    logged = []
    log.addObserver(logged.append)
    try:
        made.doPoll(1)
    finally:
        log.removeObserver(logged.append)
    assert [event["system"] for event in logged if event.get("isError")] == ["the-descriptor"]
    assert [reason.type for reason in descriptor.lost] == [ZeroDivisionError]
    assert descriptor not in made.getWriters() and descriptor not in made.getReaders()


def test_the_end_of_a_connection_is_a_clean_disconnect(poller, pair):
    made = poller()
    descriptor = Descriptor(made, pair[0])
    made.addReader(descriptor)
    pair[1].close()
    made.doPoll(1)
    assert descriptor.calls == ["read"]
    assert [reason.type for reason in descriptor.lost] == [type(CONNECTION_DONE)]
    assert descriptor not in made.getReaders()


def test_an_exception_while_reading_is_logged_in_its_context_and_disconnects(poller, pair):
    made = poller()

    def broken():
        raise ZeroDivisionError("broken protocol")

    descriptor = Descriptor(made, pair[0], read=broken)
    made.addReader(descriptor)
    pair[1].send(b"x")
    logged = []
    log.addObserver(logged.append)
    try:
        made.doPoll(1)
    finally:
        log.removeObserver(logged.append)
    errors = [event for event in logged if event.get("isError")]
    assert [event["system"] for event in errors] == ["the-descriptor"]  # as Twisted's own handler logs it
    assert errors[0]["failure"].check(ZeroDivisionError)
    assert [reason.type for reason in descriptor.lost] == [ZeroDivisionError]
    assert descriptor not in made.getReaders()


@pytest.mark.parametrize("kind", [EPollReactor, spore_reactor.SporeReactor])
def test_writes_and_hang_ups_are_handled_as_twisted_does(poller, pair, kind):
    made = poller(kind)
    writer = Descriptor(made, pair[0])
    made.addWriter(writer)
    made.doPoll(1)
    assert writer.calls == ["write"]

    reader = Descriptor(made, pair[1])
    made.addReader(reader)
    pair[1].send(b"for the writer, never read")
    pair[0].shutdown(socket.SHUT_RDWR)  # a hang-up while reading: EPOLLIN with EPOLLHUP
    made.doPoll(1)
    assert reader.calls == ["read"]
    assert [reason.type for reason in reader.lost] == [type(CONNECTION_DONE)]


def test_a_descriptor_removed_by_an_earlier_event_is_skipped(poller, pair):
    made = poller()
    other = socket.socketpair()
    try:
        one, two = Descriptor(made, pair[0]), Descriptor(made, other[0])
        # Each one's read removes the other, so whichever epoll reports first, the other must not be read.
        one.read = lambda: made.removeReader(two)
        two.read = lambda: made.removeReader(one)
        made.addReader(one)
        made.addReader(two)
        pair[1].send(b"a")
        other[1].send(b"b")
        made.doPoll(1)
        assert sorted(one.calls + two.calls) == ["read"]
    finally:
        for s in other:
            s.close()


def stopped_clock(made, start: float = 1000.0) -> list[float]:
    """Make ``made``'s clock stand at the returned list's only item."""
    now = [start]
    made.seconds = lambda: now[0]
    return now


def turns(made, count: int) -> list[float | None]:
    """Run ``made``'s main loop for ``count`` turns; the timeout each poll was given."""
    polls: list[float | None] = []

    def poll(timeout):
        polls.append(timeout)
        if len(polls) == count:
            made._started = False

    made.doIteration = poll
    made._started = made.running = True
    made.mainLoop()
    return polls


def counting_timer_runs(made) -> list[None]:
    runs: list[None] = []
    run = made.runUntilCurrent
    made.runUntilCurrent = lambda: runs.append(None) or run()
    return runs


def test_the_loop_sleeps_until_the_next_timer_and_runs_it_when_due(poller):
    made = poller()
    now = stopped_clock(made)
    runs = counting_timer_runs(made)
    fired = []
    assert turns(made, 2) == [None, None]  # no timer: sleep until an event
    assert runs == []

    made.callLater(5, fired.append, "later")
    assert turns(made, 3) == [5, 5, 5]
    assert len(runs) == 1 and fired == []  # the new timer was taken in once, then only looked at

    now[0] += 5
    assert turns(made, 1) == [None]
    assert fired == ["later"] and len(runs) == 2


def test_the_loop_runs_calls_from_other_threads_and_a_stop(poller):
    made = poller()
    stopped_clock(made)
    made.callLater(60, lambda: None)
    called, stopped = [], []
    made.callFromThread(called.append, "from a thread")
    made.addSystemEventTrigger("during", "shutdown", stopped.append, "shutdown")
    assert turns(made, 1) == [60]
    assert called == ["from a thread"]
    made._justStopped = True  # what stop() sets
    turns(made, 1)
    assert stopped == ["shutdown"]


def test_a_loop_no_longer_running_polls_without_sleeping(poller):
    made = poller()
    stopped_clock(made)
    made.callLater(60, lambda: None)
    assert turns(made, 1) == [60]
    made.running = False
    made._started = True
    polls = []
    made.doIteration = lambda timeout: polls.append(timeout) or setattr(made, "_started", False)
    made.mainLoop()
    assert polls == [0]
