"""How many connections a listening port takes per turn of the reactor.

Twisted's ``tcp.Port`` accepts a batch of connections each time its socket
is readable, and makes the next batch 20 larger whenever one was full.  In a
flood every batch is full: the batch grows without bound, and one turn of
the reactor goes on accepting for a fraction of a second while every other
connection (visitors, data connections, the tunnels' heartbeats) waits.
Measured with 250 addresses refreshing 2,000 connections to the control
port, a visitor waited 1.0-1.7 s for its first byte; with at most 20 per
turn, 0.17-0.22 s.

This is the one place that leans on a Twisted detail that is not public API
(``Port.numberAccepts``, read by ``Port.doRead``); ``tests/test_accepting.py``
fails if a Twisted upgrade changes it.
"""

from __future__ import annotations

from twisted.internet import tcp

ACCEPTS_PER_TURN = 20
"""Connections a listening port accepts at most each time the reactor finds it readable."""


def bound_accepts(port: object, most: int = ACCEPTS_PER_TURN) -> None:
    """Have the listening ``port`` accept at most ``most`` connections per turn (a no-op for other kinds of port)."""
    if not isinstance(port, tcp.Port):
        return
    accept = port.doRead

    def doRead():
        port.numberAccepts = min(port.numberAccepts, most)
        return accept()

    port.doRead = doRead
