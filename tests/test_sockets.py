"""Socket options of the connections that carry tunnelled bytes (spore.sockets), on real sockets."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet.ssl import optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory

from spore.sockets import READ_SIZE, tune
from tests.test_sending import Connected, closing, twisted_to_plain_socket


@pytest_twisted.ensureDeferred
async def test_a_tuned_connection_reads_large_chunks_without_nagle(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    with closing(transport, plain):
        assert transport.bufferSize < READ_SIZE
        tune(transport, 100000, None)
        assert transport.bufferSize == READ_SIZE
        assert transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert transport.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 100000


@pytest_twisted.ensureDeferred
async def test_under_tls_the_tcp_connection_is_tuned(reactor):
    transport, plain = await twisted_to_plain_socket(reactor)
    with closing(transport, plain):
        tls = TLSMemoryBIOFactory(optionsForClientTLS("example.com"), True, Connected()).buildProtocol(None)
        tls.transport = transport  # what makeConnection sets, without starting a handshake
        tune(tls, None, None)
        assert transport.bufferSize == READ_SIZE
