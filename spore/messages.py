"""The control protocol's messages and their JSON encoding (no I/O here).

bore serialises its messages with serde's externally tagged enums: a bare
string for a message without a value (``"Heartbeat"``), a one-key object for
one with a value (``{"Hello":20345}``).  Each frame is that JSON followed by a
NUL byte; the framing itself lives in :mod:`spore.control`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Callable, Union

MAX_FRAME_LENGTH = 256
"""The longest frame body bore accepts, not counting the NUL."""

DELIMITER = b"\0"


class ProtocolError(Exception):
    """A peer sent something the protocol does not allow.

    The message is the text bore uses for the same fault, so it can go into
    an ``Error`` frame unchanged.
    """


FRAME_TOO_LONG = "frame error, invalid byte length"
UNPARSABLE = "unable to parse message"

# Errors of Spore's server that bore's has no case for.
PORT_RESERVED = "port reserved for another client"  # Hello for a port kept for another name (--clients)
SECRET_WITHDRAWN = "secret no longer accepted"  # a reload removed the secret a tunnel was opened with


# Client to server.


@dataclass(frozen=True, slots=True)
class Authenticate:
    """The answer to a challenge: hex HMAC tag."""

    tag: str


@dataclass(frozen=True, slots=True)
class Hello:
    """Client: open a tunnel on ``port`` (0: any).  Server: it is open."""

    port: int


@dataclass(frozen=True, slots=True)
class Accept:
    """This connection carries the pending visitor ``id``."""

    id: uuid.UUID


# Server to client.


@dataclass(frozen=True, slots=True)
class Challenge:
    """Authentication required: answer with an ``Authenticate``."""

    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A keepalive without content."""


@dataclass(frozen=True, slots=True)
class Connection:
    """A visitor arrived; open a data connection and ``Accept`` it."""

    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Error:
    """A fatal error; the sender closes the connection after it."""

    text: str


ClientMessage = Union[Authenticate, Hello, Accept]
ServerMessage = Union[Challenge, Hello, Heartbeat, Connection, Error]
Message = Union[ClientMessage, ServerMessage]


_to_json = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps would build an encoder each time


def encode(message: Message) -> bytes:
    """Return the frame for ``message``, NUL included."""
    match message:
        case Heartbeat():
            body: object = "Heartbeat"
        case Hello(port):
            body = {"Hello": port}
        case Authenticate(tag):
            body = {"Authenticate": tag}
        case Error(text):
            body = {"Error": text}
        case Accept(id) | Challenge(id) | Connection(id):
            body = {type(message).__name__: str(id)}
        case _:
            raise TypeError(f"not a message: {message!r}")
    return _to_json(body).encode() + DELIMITER


def _port(value: object) -> int:
    # serde's u16: an integer (not a bool, not a float) in 0..65535.
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        raise ProtocolError(UNPARSABLE)
    return value


def _uuid(value: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise ProtocolError(UNPARSABLE)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ProtocolError(UNPARSABLE) from None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ProtocolError(UNPARSABLE)
    return value


_Parsers = dict[str, Callable[[object], Message]]

_CLIENT_MESSAGES: _Parsers = {
    "Authenticate": lambda v: Authenticate(_text(v)),
    "Hello": lambda v: Hello(_port(v)),
    "Accept": lambda v: Accept(_uuid(v)),
}
_SERVER_MESSAGES: _Parsers = {
    "Challenge": lambda v: Challenge(_uuid(v)),
    "Hello": lambda v: Hello(_port(v)),
    "Connection": lambda v: Connection(_uuid(v)),
    "Error": lambda v: Error(_text(v)),
}
_SERVER_UNIT_MESSAGES = {"Heartbeat": Heartbeat()}


def _reject_constant(name: str) -> object:
    # JSON has no NaN or Infinity; Python's parser would accept them.
    raise ValueError(name)


_from_json = json.JSONDecoder(parse_constant=_reject_constant).decode  # json.loads would build a decoder each time


def _decode(frame: bytes, parsers: _Parsers, units: dict[str, Message]) -> Message:
    if len(frame) > MAX_FRAME_LENGTH:
        raise ProtocolError(FRAME_TOO_LONG)
    try:
        body = _from_json(frame.decode("utf-8"))
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        raise ProtocolError(UNPARSABLE) from None
    if isinstance(body, str) and body in units:
        return units[body]
    if isinstance(body, dict) and len(body) == 1:
        ((name, value),) = body.items()
        if name in parsers:
            return parsers[name](value)
    raise ProtocolError(UNPARSABLE)


def decode_client_message(frame: bytes) -> ClientMessage:
    """Parse a frame body (without its NUL) that a client sent."""
    return _decode(frame, _CLIENT_MESSAGES, {})  # type: ignore[return-value]


def decode_server_message(frame: bytes) -> ServerMessage:
    """Parse a frame body (without its NUL) that a server sent."""
    return _decode(frame, _SERVER_MESSAGES, _SERVER_UNIT_MESSAGES)  # type: ignore[return-value]
