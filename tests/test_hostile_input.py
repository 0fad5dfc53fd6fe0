"""The control port fed arbitrary bytes: it answers with valid frames or closes, and leaks nothing."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from spore.messages import (
    Accept,
    Authenticate,
    Error,
    Hello,
    ProtocolError,
    decode_server_message,
    encode,
)
from spore.server import ServerFactory
from spore.settings import ServerSettings
from tests.fakes import TunnelReactor, connect

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
chunks = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([
        encode(Hello(0)), encode(Hello(20050)), encode(Hello(65535)),
        encode(Accept(__import__("uuid").UUID(int=7))), encode(Authenticate("ab" * 32)), b'"Heartbeat"\0', b"\0",
    ]),
    json_values.map(lambda v: json.dumps(v).encode() + b"\0"),
    st.dictionaries(st.sampled_from(["Hello", "Accept", "Authenticate"]), json_values, min_size=1, max_size=2).map(
        lambda v: json.dumps(v).encode() + b"\0"
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(chunks, max_size=8), data=st.data(), secret=st.booleans(), half_close=st.booleans())
def test_any_byte_stream_gets_valid_frames_or_a_close(pieces, data, secret, half_close):
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reactor = TunnelReactor()
    server = ServerFactory(
        ServerSettings(min_port=20000, max_port=20100, secrets=("s3cret",) if secret else ()), reactor
    )
    protocol, transport = connect(server)
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        if transport.disconnecting:
            break
        protocol.dataReceived(stream[start:end])
        reactor.advance(0.5)
    if half_close and not transport.disconnecting:
        protocol.readConnectionLost()
    reactor.advance(20)

    sent = transport.value()
    assert sent == b"" or sent.endswith(b"\0")
    answers = []
    for frame in sent.split(b"\0")[:-1]:
        try:
            answers.append(decode_server_message(frame))
        except ProtocolError:
            raise AssertionError(f"invalid frame sent: {frame!r}")
    if any(isinstance(a, Error) for a in answers):
        assert isinstance(answers[-1], Error) and transport.disconnecting

    protocol.connectionLost(Failure(ConnectionDone()))
    assert len(server.admission) == 0
    assert sum(server.tunnels_per_host.values()) == 0
    assert reactor.listening == {}
