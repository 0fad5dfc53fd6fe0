"""The control messages' JSON encoding, checked against bore's bytes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from spore import messages as m
from spore.messages import (
    ProtocolError,
    decode_client_message,
    decode_server_message,
    encode,
)

ID = uuid.UUID("04a1d439-2435-4664-9847-804f2ce92a0d")
TRANSCRIPTS = Path(__file__).parent / "transcripts"


@pytest.mark.parametrize(
    "message, wire, decode",
    [
        (m.Hello(0), b'{"Hello":0}\0', decode_client_message),
        (m.Hello(65535), b'{"Hello":65535}\0', decode_server_message),
        (m.Authenticate("c23c" * 16), b'{"Authenticate":"' + b"c23c" * 16 + b'"}\0', decode_client_message),
        (m.Accept(ID), b'{"Accept":"04a1d439-2435-4664-9847-804f2ce92a0d"}\0', decode_client_message),
        (m.Challenge(ID), b'{"Challenge":"04a1d439-2435-4664-9847-804f2ce92a0d"}\0', decode_server_message),
        (m.Connection(ID), b'{"Connection":"04a1d439-2435-4664-9847-804f2ce92a0d"}\0', decode_server_message),
        (m.Heartbeat(), b'"Heartbeat"\0', decode_server_message),
        (m.Error("invalid secret"), b'{"Error":"invalid secret"}\0', decode_server_message),
    ],
)
def test_every_message_both_ways(message, wire, decode):
    assert encode(message) == wire
    assert decode(wire[:-1]) == message


def test_client_messages_are_not_server_messages():
    with pytest.raises(ProtocolError):
        decode_server_message(b'{"Accept":"04a1d439-2435-4664-9847-804f2ce92a0d"}')
    with pytest.raises(ProtocolError):
        decode_client_message(b'"Heartbeat"')


def test_a_frame_of_exactly_256_bytes_passes_and_257_fails():
    frame = b'{"Hello":' + b" " * (256 - 12) + b'7}'
    assert len(frame) == 255
    assert decode_client_message(frame + b" ") == m.Hello(7)
    with pytest.raises(ProtocolError, match="frame error, invalid byte length"):
        decode_client_message(frame + b"  ")


@pytest.mark.parametrize(
    "text",
    [
        "urn:uuid:04a1d439-2435-4664-9847-804f2ce92a0d",
        "04a1d43924354664984780 4f2ce92a0d".replace(" ", ""),
        "{04a1d439-2435-4664-9847-804f2ce92a0d}",
        "04A1D439-2435-4664-9847-804F2CE92A0D",
    ],
)
def test_any_standard_uuid_form_is_read(text):
    assert decode_client_message(json.dumps({"Accept": text}).encode()) == m.Accept(ID)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"Hello":-1}',
        b'{"Hello":1.0}',
        b'{"Hello":true}',
        b'{"Hello":"80"}',
        b'{"Hello":NaN}',
        b'{"Hello":0,"Accept":"04a1d439-2435-4664-9847-804f2ce92a0d"}',
        b'{"Authenticate":5}',
        b'"Hello"',
        b"[]",
        b"\xff\xfe",
        b'{"Accept":null}',
    ],
)
def test_wrong_shapes_and_types_are_rejected(frame):
    with pytest.raises(ProtocolError, match="unable to parse message"):
        decode_client_message(frame)


def _rejected_probes():
    """The frames bore's server could not parse, from the capture.

    (It also closed on an unasked Authenticate and an unknown Accept: those
    parse, and the server's conformance tests cover them.)
    """
    transcript = json.loads((TRANSCRIPTS / "h_bad_frames.json").read_text())
    for connection in transcript["connections"]:
        sent = b"".join(bytes.fromhex(e["hex"]) for e in connection["events"] if e["kind"] == "data" and e["from"] == "client")
        answered = any(e["kind"] == "data" and e["from"] == "server" for e in connection["events"])
        if sent and not answered and not sent.startswith((b'{"Authenticate"', b'{"Accept":"0000')):
            yield sent


@pytest.mark.parametrize("sent", list(_rejected_probes()))
def test_every_malformed_frame_in_the_capture_is_rejected(sent):
    frames = sent.split(b"\0")
    with pytest.raises(ProtocolError):
        for frame in frames[:-1] if sent.endswith(b"\0") else frames:
            decode_client_message(frame)
