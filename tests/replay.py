"""Replays captured bore sessions (tests/transcripts) against Spore's protocols.

Spore plays one side of every captured connection; the capture plays the
other, event by event at the captured times on a fake clock.  What Spore
sends is collected and compared with what bore sent.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from tests.fakes import Transport

TRANSCRIPTS = Path(__file__).parent / "transcripts"
HEARTBEAT = b'"Heartbeat"\0'
_UUID = re.compile(rb'"(?:Challenge|Connection)":"([0-9a-f-]{36})"')


def load(name: str) -> dict:
    return json.loads((TRANSCRIPTS / f"{name}.json").read_text())


def command_options(command: str) -> dict[str, str]:
    """The --name value pairs of a captured command line, and its first argument."""
    words = shlex.split(command)
    options = {"args": [w for w in words[2:] if not w.startswith("-")][:1]}
    for i, word in enumerate(words):
        if word.startswith("--"):
            options[word[2:]] = words[i + 1]
    return options


def frames(data: bytes) -> list[bytes]:
    """The NUL-terminated frames in ``data``."""
    return [f + b"\0" for f in data.split(b"\0")[:-1]]


def without_heartbeats(data: bytes) -> bytes:
    return data.replace(HEARTBEAT, b"")


def generated_uuids(transcript: dict) -> list[str]:
    """The uuids bore's server made up, in the order it sent them."""
    sent = sorted(
        (e["t"], m.group(1).decode())
        for c in transcript["connections"]
        for e in c["events"]
        if e["from"] == "server" and e["kind"] == "data"
        for m in _UUID.finditer(bytes.fromhex(e["hex"]))
    )
    return [u for _, u in sent]


@dataclass
class Played:
    """One captured connection and Spore's live side of it."""

    connection: dict
    protocol: object = None
    transport: Transport | None = None
    queued: list = field(default_factory=list)  # captured events held back while Spore is paused
    lost: bool = False
    write_lost: bool = False
    refused: bool = False

    @property
    def role(self) -> str:
        return self.connection["role"].split(" ")[0]

    def expected(self, side: str) -> bytes:
        return b"".join(
            bytes.fromhex(e["hex"]) for e in self.connection["events"] if e["from"] == side and e["kind"] == "data"
        )


class Replay:
    """Plays ``side`` ("client" or "server") of the captured connections of ``roles``."""

    def __init__(self, transcript: dict, clock, side: str, roles: set[str]) -> None:
        self.clock = clock
        self.side = side
        self.played = {c["index"]: Played(c) for c in transcript["connections"] if c["role"].split(" ")[0] in roles}
        self.timeline = sorted(
            (e["t"], index, e) for index, p in self.played.items() for e in p.connection["events"]
        )

    def open(self, played: Played) -> None:
        """Spore's side of ``played`` must now exist: set protocol and transport."""
        raise NotImplementedError

    def run(self) -> None:
        for t, index, event in self.timeline:
            self.clock.advance(max(0.0, t - self.clock.seconds()))
            self.settle()
            played = self.played[index]
            if played.refused:
                continue
            if event["kind"] in ("SYN", "SYN-ACK"):
                if played.transport is None:
                    self.open(played)
            elif event["from"] == self.side:
                played.queued.append(event)
            else:
                self.check_open_while_peer_is(played, event)
            self.settle()

    def check_open_while_peer_is(self, played: Played, event: dict) -> None:
        """Spore closed by the time bore did, where bore closed first."""
        if event["kind"] in ("FIN", "RST") and not self._peer_finished(played, event["t"]):
            assert played.transport.closed or played.transport.write_closed, (
                f"connection {played.connection['index']} ({played.role}): bore closed it at "
                f"t={event['t']:.4f}, Spore had not"
            )

    def _peer_finished(self, played: Played, before: float) -> bool:
        return any(
            e["from"] == self.side and e["kind"] in ("FIN", "RST") and e["t"] <= before
            for e in played.connection["events"]
        )

    def settle(self) -> None:
        """Deliver what Spore can take now, and its closes, until nothing changes."""
        changed = True
        while changed:
            changed = False
            for played in self.played.values():
                transport, protocol = played.transport, played.protocol
                if transport is None or played.lost or played.refused:
                    continue
                while played.queued and transport.producerState == "producing" and not transport.closed:
                    changed = True
                    event = played.queued.pop(0)
                    if event["kind"] == "data":
                        protocol.dataReceived(bytes.fromhex(event["hex"]))
                    elif event["kind"] == "FIN":
                        protocol.readConnectionLost()
                    else:
                        played.lost = True
                        protocol.connectionLost(Failure(ConnectionLost("reset by peer")))
                        break
                if played.lost:
                    continue
                if transport.closed:
                    played.lost = changed = True
                    protocol.connectionLost(Failure(ConnectionDone()))
                elif transport.write_closed and not played.write_lost:
                    played.write_lost = changed = True
                    protocol.writeConnectionLost()
