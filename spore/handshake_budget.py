"""How much of the server's time TLS handshakes may take.

A TLS handshake costs the server a key exchange and a signature, about a
millisecond of CPU, while the ClientHello that starts it costs its sender
nothing: a flood of replayed ClientHellos would keep the server busy with
handshakes and nothing else.  So the CPU time spent on handshakes is
measured and bounded: at most ``share`` of every ``window``.  A connection
whose handshake bytes arrive once a window's budget is spent is not read
until a later window.  Those waiting take their turns by source: first the
source holding the fewest connections in the server's admission table, and
between equals the one that has waited longest since its last turn.  So a
flood from a few hundred addresses cannot push one real client's handshake
to the back.  A connection waiting its turn makes no
progress, so the admission table sheds it first when it must.
"""

from __future__ import annotations

import time
from collections import deque
from itertools import count
from typing import Callable, Protocol

from twisted.internet.interfaces import IDelayedCall, IOpenSSLServerConnectionCreator, IProtocolFactory, IReactorTime

from spore.access import source_key
from spore.tls import HalfCloseTLSFactory, HalfCloseTLSTransport

SHARE = 0.5
"""The fraction of one core that TLS handshakes may take, at most."""

WINDOW = 0.05
"""Seconds over which that share is counted: short, so a real handshake that had to wait waits little."""


class Waiting(Protocol):
    def resume_handshake(self) -> None:
        """Go on with the handshake: the budget has room again."""


class HandshakeBudget:
    """The CPU time TLS handshakes spent in the current window, and the connections waiting for the next."""

    def __init__(
        self,
        clock: IReactorTime,
        cpu: Callable[[], float] = time.process_time,
        share: float = SHARE,
        window: float = WINDOW,
        on_spent: Callable[[float], object] = lambda seconds: None,
        on_waiting: Callable[[], object] = lambda: None,
        weight: Callable[[str], int] = lambda source: 0,
    ) -> None:
        self.clock = clock
        self.cpu = cpu
        self.allowed = share * window
        self.window = window
        self.on_spent = on_spent
        self.on_waiting = on_waiting
        self._weight = weight
        self.spent = 0.0
        self._window_ends = clock.seconds() + window
        self._waiting: dict[str, deque[Waiting]] = {}
        self._since: dict[str, int] = {}  # when each waiting source last had a turn, or began to wait
        self._turns = count()
        self._next_window: IDelayedCall | None = None

    def available(self) -> bool:
        """Whether a handshake may go on now."""
        now = self.clock.seconds()
        if now >= self._window_ends:
            self.spent, self._window_ends = 0.0, now + self.window
        return self.spent < self.allowed

    def spend(self, seconds: float) -> None:
        """A handshake took ``seconds`` of CPU."""
        self.spent += seconds
        self.on_spent(seconds)

    def wait(self, source: str, connection: Waiting) -> None:
        """``connection`` from ``source`` waits for its turn in a later window."""
        if source not in self._waiting:
            self._waiting[source] = deque()
            self._since[source] = next(self._turns)
        self._waiting[source].append(connection)
        self.on_waiting()
        if self._next_window is None:
            delay = max(0.0, self._window_ends - self.clock.seconds())
            self._next_window = self.clock.callLater(delay, self._new_window)

    def forget(self, source: str, connection: Waiting) -> None:
        """``connection`` waits no more (it is gone)."""
        waiting = self._waiting.get(source)
        if waiting is not None and connection in waiting:
            waiting.remove(connection)
            if not waiting:
                del self._waiting[source], self._since[source]

    def __len__(self) -> int:
        """Connections waiting for their turn."""
        return sum(len(waiting) for waiting in self._waiting.values())

    def _new_window(self) -> None:
        self._next_window = None
        while self._waiting and self.available():
            source = min(self._waiting, key=lambda s: (self._weight(s), self._since[s]))
            waiting = self._waiting[source]
            connection = waiting.popleft()
            if waiting:
                self._since[source] = next(self._turns)  # to the back of its equals
            else:
                del self._waiting[source], self._since[source]
            connection.resume_handshake()
        if self._waiting:
            self._next_window = self.clock.callLater(self.window, self._new_window)


class BudgetedTLSTransport(HalfCloseTLSTransport):
    """A server-side TLS connection whose handshake keeps within its factory's :class:`HandshakeBudget`.

    Leans on ``_handshakeDone``, as :class:`spore.tls.HalfCloseTLSTransport` does.
    """

    factory: BudgetedTLSFactory
    _held = b""  # handshake bytes read while waiting for the budget
    _source: str | None = None  # set while waiting
    _answered = False  # the ClientHello, which costs the signature, has had its turn

    def dataReceived(self, data: bytes) -> None:
        if self._handshakeDone and not self._held:
            return super().dataReceived(data)
        if self._answered:
            # The rest of a handshake costs little, and holding it back would
            # make a real client wait its turn twice.
            return self._handshake(data)
        budget = self.factory.budget
        if self._held or not budget.available():
            if self._source is None:
                self._source = source_key(self.transport.getPeer()) or ""
                self.transport.pauseProducing()
                budget.wait(self._source, self)
            self._held += data
            return
        self._handshake(data)

    def resume_handshake(self) -> None:
        data, self._held, self._source = self._held, b"", None
        if self._lostTLSConnection or self._aborted:
            return
        self.transport.resumeProducing()
        self._handshake(data)

    def _handshake(self, data: bytes) -> None:
        budget = self.factory.budget
        started = budget.cpu()
        try:
            super().dataReceived(data)
        finally:
            budget.spend(budget.cpu() - started)
        # A cipher is chosen once the whole ClientHello has been answered.
        self._answered = self._answered or self._tlsConnection.get_cipher_name() is not None

    def connectionLost(self, reason) -> None:
        if self._source is not None:
            self.factory.budget.forget(self._source, self)
            self._source = None
        super().connectionLost(reason)


class BudgetedTLSFactory(HalfCloseTLSFactory):
    """Spore's server-side TLS wrapping factory: half-close, and handshakes within ``budget``."""

    protocol = BudgetedTLSTransport

    def __init__(self, options, wrappedFactory, budget: HandshakeBudget) -> None:
        super().__init__(options, False, wrappedFactory)
        self.budget = budget


def wrap_server_factory(
    factory: IProtocolFactory, options: IOpenSSLServerConnectionCreator, budget: HandshakeBudget
) -> BudgetedTLSFactory:
    """A factory that speaks TLS around ``factory``'s protocols, on any listening endpoint."""
    return BudgetedTLSFactory(options, factory, budget)
