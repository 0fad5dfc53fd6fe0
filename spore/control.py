"""NUL-delimited JSON frames on a TCP connection: the base of every Spore protocol.

A thin adapter from bytes to :mod:`spore.messages`: each frame is decoded and
handed to ``messageReceived``; a frame that cannot be decoded ends in
``protocolError``.  After a frame that switches the connection to forwarding
(``Accept``), ``setRawMode`` makes whatever follows payload.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.protocols.basic import LineReceiver

from spore import messages
from spore.messages import Message, ProtocolError
from spore.splice import SpliceProtocol

HANDSHAKE_TIMEOUT = 3.0
"""Seconds a peer has for each message of the handshake (bore's value)."""

TIMED_OUT = "timed out waiting for initial message"


class FrameProtocol(LineReceiver, SpliceProtocol):
    """Frames in and out; once spliced, raw bytes both ways."""

    delimiter = messages.DELIMITER
    MAX_LENGTH = messages.MAX_FRAME_LENGTH

    decode: Callable[[bytes], Message]
    clock: IReactorTime
    _deadline: IDelayedCall | None = None
    _forwarding = False  # spliced, and LineReceiver holds nothing more

    def send(self, message: Message) -> None:
        self.write(messages.encode(message))

    def lineReceived(self, line: bytes) -> None:
        try:
            message = self.decode(line)
        except ProtocolError as e:
            self.protocolError(str(e))
        else:
            self.messageReceived(message)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.protocolError(messages.FRAME_TOO_LONG)

    def dataReceived(self, data: bytes) -> None:
        if self._forwarding:
            return self.forward(data)
        LineReceiver.dataReceived(self, data)

    def rawDataReceived(self, data: bytes) -> None:
        # LineReceiver has handed over all it held: later reads can skip it.
        self._forwarding = True
        self.forward(data)

    def forward(self, data: bytes) -> None:
        """Payload from the peer, once spliced."""
        self.write_peer(data)

    def readConnectionLost(self) -> None:
        if self.peer is not None or not self.line_mode:
            return SpliceProtocol.readConnectionLost(self)
        # bore reads a last frame that lacks its NUL when the peer's FIN
        # follows it, so Spore does too.
        last = self.clearLineBuffer()
        if last:
            self.lineReceived(last)
        self.endOfFrames()

    def endOfFrames(self) -> None:
        """The peer sent its FIN while we were still reading frames."""
        self.transport.loseConnection()

    def messageReceived(self, message: Message) -> None:
        raise NotImplementedError

    def protocolError(self, why: str) -> None:
        """The peer broke the protocol: ``why`` is bore's text for it."""
        raise NotImplementedError

    def set_deadline(self, seconds: float, on_timeout: Callable[[], None]) -> None:
        """Call ``on_timeout`` in ``seconds`` unless another deadline is set or it is cancelled first."""
        deadline = self._deadline
        if deadline is not None and deadline.active() and deadline.func == on_timeout:
            # Put off (a heartbeat's, each time the peer is heard): cheaper than a new call.
            deadline.reset(seconds)
            return
        self.cancel_deadline()
        self._deadline = self.clock.callLater(seconds, on_timeout)

    def cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def connectionLost(self, reason) -> None:
        self.cancel_deadline()
        SpliceProtocol.connectionLost(self, reason)
