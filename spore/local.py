"""The local client: keeps a tunnel open and serves its visitors from a local service."""

from __future__ import annotations

import sys
import uuid
from typing import Callable, TextIO

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from spore import auth
from spore.control import HANDSHAKE_TIMEOUT, TIMED_OUT, FrameProtocol
from spore.dialing import Dialer, EndpointDialer, QuietFactory, reached
from spore.messages import (
    PORT_RESERVED,
    SECRET_WITHDRAWN,
    Accept,
    Authenticate,
    Challenge,
    Connection,
    Error,
    Heartbeat,
    Hello,
    ServerMessage,
    decode_server_message,
)
from spore.settings import LocalSettings
from spore.sockets import keep_alive, tune
from spore.splice import SpliceProtocol
from spore.tls import describe_tls_failure

NO_CLIENT_SECRET = "server requires authentication, but no client secret was provided"
NO_SERVER_SECRET = "expected authentication challenge, but no secret was required"
_TLS_HINT = "(if the server uses TLS, add --tls)"

# Server errors that retrying cannot fix.
FATAL_SERVER_ERRORS = {
    "invalid secret",
    "server requires secret, but no secret was provided",
    "client port number not in allowed range",
    PORT_RESERVED,
    SECRET_WITHDRAWN,
}

KEEP_PORT_FOR = 30.0
"""Seconds a reconnecting client keeps asking for the port it had before taking any."""


class TunnelFailed(Exception):
    """The tunnel cannot go on; the message says why, for a person."""


def describe_connect_failure(reason: Failure) -> str:
    """A short reason a connection attempt failed, without Twisted's jargon."""
    if reason.check(error.ConnectionRefusedError):
        return "connection refused"
    if reason.check(error.TimeoutError, error.UserError):
        return "timed out"
    if reason.check(error.DNSLookupError):
        return "host name not found"
    return reason.getErrorMessage()


class ServerConnectionProtocol(FrameProtocol):
    """Common to both kinds of connection a client makes to the server."""

    decode = staticmethod(decode_server_message)

    def __init__(self, client: LocalClient) -> None:
        self.client = client
        self.clock = client.clock
        self.settings = client.settings

    def answer_challenge(self, challenge: uuid.UUID) -> None:
        self.send(Authenticate(auth.answer(self.settings.secret, challenge)))


class ControlProtocol(ServerConnectionProtocol):
    """The control connection: asks for a tunnel, then hears of visitors."""

    log = Logger()
    state = "new"

    def connectionMade(self) -> None:
        keep_alive(self.transport)
        self.client.server_reached(self.transport.getPeer())
        if self.settings.secret is not None:
            self.state = "challenge"
        else:
            self._say_hello()
        self.set_deadline(HANDSHAKE_TIMEOUT, self._timed_out)

    def _timed_out(self) -> None:
        self.fail(TIMED_OUT if self.settings.tls else f"{TIMED_OUT} {_TLS_HINT}")

    def dataReceived(self, data: bytes) -> None:
        if self.state in ("challenge", "hello") and data[:2] in (b"\x15\x03", b"\x16\x03"):
            # A TLS record (an alert or a handshake) where a frame should be.
            return self.fail(f"server at {self.client.server} speaks TLS: connect with --tls", retry=False)
        super().dataReceived(data)

    def _say_hello(self) -> None:
        # bore sends Hello right after Authenticate, without waiting.
        self.send(Hello(self.client.port_to_ask()))
        self.state = "hello"
        self.set_deadline(HANDSHAKE_TIMEOUT, self._timed_out)

    def messageReceived(self, message: ServerMessage) -> None:
        if self.state == "open":
            # Anything from the server shows it is alive.
            self.set_deadline(self.settings.heartbeat_timeout, self._silent)
        match self.state, message:
            case _, Error(text):
                retry = text not in FATAL_SERVER_ERRORS
                if text == PORT_RESERVED and self.settings.port == 0:
                    # Not the port asked for but the one held before the
                    # tunnel was lost, reserved since: any port will do.
                    self.client.give_up_old_port()
                    retry = True
                self.fail(f"server error: {text}", retry=retry)
            case "challenge", Challenge(id):
                self.answer_challenge(id)
                self._say_hello()
            case "challenge", _:
                self.fail(NO_SERVER_SECRET, retry=False)
            case "hello", Hello(port):
                self.state = "open"
                self.set_deadline(self.settings.heartbeat_timeout, self._silent)
                self.client.tunnel_opened(port)
            case "hello", Challenge():
                self.fail(NO_CLIENT_SECRET, retry=False)
            case "hello", _:
                self.fail(f"unexpected initial non-hello message: {message}")
            case "open", Heartbeat():
                pass
            case "open", Connection(id):
                self.client.visitor_arrived(id)
            case "open", _:
                self.log.warn("ignoring unexpected {message}", message=repr(message))

    def _silent(self) -> None:
        seconds = self.settings.heartbeat_timeout
        self.fail(f"server at {self.client.server} sent nothing for {seconds:g} seconds")
        self.transport.abortConnection()  # it may never acknowledge a graceful close

    def protocolError(self, why: str) -> None:
        self.fail(f"bad frame from server: {why}")

    def fail(self, why: str, retry: bool = True) -> None:
        self.cancel_deadline()
        self.state = "failed"
        self.transport.loseConnection()
        self.client.lost(why, retry)

    def connectionLost(self, reason) -> None:
        # Asked now: the TLS connection is gone once this returns.
        tls_problem = describe_tls_failure(reason, self.transport)
        state, self.state = self.state, "failed"
        FrameProtocol.connectionLost(self, reason)
        if state == "failed":
            return
        if tls_problem is not None:
            # A certificate does not fix itself; a TLS server restarting does.
            fatal = "certificate" in tls_problem or "does not speak TLS" in tls_problem
            self.client.lost(f"TLS with {self.client.server} failed: {tls_problem}", retry=not fatal)
        elif state != "open" and not self.settings.tls:
            self.client.lost(f"server at {self.client.server} closed the connection {_TLS_HINT}", retry=True)
        else:
            self.client.lost(f"server at {self.client.server} closed the connection", retry=True)


class DataProtocol(ServerConnectionProtocol):
    """A connection that claims one visitor and splices it to the local service.

    The local connection is dialled at the same time as this one (``local``),
    so a visitor waits for the slower of the two, not for both in a row.
    """

    log = Logger()

    def __init__(self, client: LocalClient, id: uuid.UUID, local: Deferred[SpliceProtocol]) -> None:
        super().__init__(client)
        self.id = id
        self.local: Deferred[SpliceProtocol] | None = local

    def connectionMade(self) -> None:
        tune(self.transport, self.settings.sndbuf, self.settings.recbuf)
        if self.settings.secret is None:
            self._accept()
        else:
            self.set_deadline(HANDSHAKE_TIMEOUT, self.transport.loseConnection)

    def messageReceived(self, message: ServerMessage) -> None:
        if isinstance(message, Challenge):
            self.answer_challenge(message.id)
            self._accept()
        else:
            self.protocolError(f"unexpected {message}")

    def protocolError(self, why: str) -> None:
        self.log.warn("data connection for {id}: {why}", id=str(self.id), why=why)
        self.transport.loseConnection()

    def _accept(self) -> None:
        self.cancel_deadline()
        self.send(Accept(self.id))
        self.setRawMode()
        local, self.local = self.local, None
        local.addCallbacks(self._local_connected, self._local_failed)
        if not local.called:
            # What follows is the visitor's bytes: hold them until the
            # local service is connected.
            self.pauseProducing()

    def _local_connected(self, local: SpliceProtocol) -> None:
        if not self.transport.connected:
            local.transport.loseConnection()
            return
        self.splice(local)
        if self.paused:  # the local service came second
            self.resumeProducing()  # LineReceiver's pause too: it passes on what it held
            # Bytes that came while it was being dialled are waiting.
            self.read_now()

    def _local_failed(self, reason: Failure) -> None:
        self.log.warn(
            "could not connect to local service {address} for visitor {id}: {why}",
            address=self.client.local_address, id=str(self.id), why=describe_connect_failure(reason),
        )
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        tls_problem = describe_tls_failure(reason, self.transport)
        if tls_problem is not None:
            self.log.warn("data connection for {id}: TLS failed: {why}", id=str(self.id), why=tls_problem)
        if self.local is not None:  # lost before it could claim the visitor
            _abandon(self.local)
            self.local = None
        FrameProtocol.connectionLost(self, reason)


def _abandon(local: Deferred[SpliceProtocol]) -> None:
    """Close a local connection nobody will use, once (and if) it is made."""
    local.addCallbacks(lambda protocol: protocol.transport.loseConnection(), lambda failure: None)


class LocalClient:
    """One tunnel through a server to a local service, reopened when the server comes back."""

    log = Logger()

    def __init__(
        self,
        settings: LocalSettings,
        clock: IReactorTime,
        server: IStreamClientEndpoint,
        local: IStreamClientEndpoint,
        stdout: TextIO | None = None,
        dial_local: Dialer | None = None,
        dial_server_at: Callable[[str], Dialer] | None = None,
    ) -> None:
        """``server`` and ``local`` are where to connect; ``dial_local``, if given, dials the same place faster.

        ``dial_server_at``, if given, makes a Dialer to the server at an IP
        address: data connections then go to the address the control
        connection reached, with no name resolved per visitor, and to the same
        server when its name has several addresses (see spore.dialing).
        """
        self.settings = settings
        self.clock = clock
        self.server_endpoint = server
        self.local_endpoint = local
        self.dial_server: Dialer = EndpointDialer(server)
        self.dial_server_at = dial_server_at
        self.dial_local = dial_local or EndpointDialer(local)
        self.stdout = stdout if stdout is not None else sys.__stdout__
        self.server = f"{settings.to}:{settings.control_port}"
        self.local_address = f"{settings.local_host}:{settings.local_port}"
        self.done: Deferred[None] = Deferred()
        self.remote_port: int | None = None  # the public port of the last tunnel
        self.lost_at: float | None = None  # when that tunnel was lost
        self.service = ClientService(
            server,
            QuietFactory(lambda: ControlProtocol(self)),
            retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=settings.max_retry_interval, factor=2.0),
            clock=clock,
        )

    def start(self) -> Deferred[None]:
        """Open the tunnel; ``done`` fails with TunnelFailed when it cannot go on."""
        # A server that cannot be reached at all at start is a mistake to
        # report, not to retry: the retrying is for a tunnel that was open.
        self.service.whenConnected(failAfterFailures=1).addErrback(self._first_connection_failed)
        self.service.startService()
        return self.done

    def stop(self) -> None:
        """Close the tunnel on purpose."""
        if not self.done.called:
            self.done.callback(None)
        if self.service.running:
            self.service.stopService()

    def _first_connection_failed(self, reason: Failure) -> None:
        # This runs inside the service's own state change, which cannot be
        # interrupted by a stop: give up on the next turn instead.
        why = f"could not connect to server at {self.server}: {describe_connect_failure(reason)}"
        self.clock.callLater(0, lambda: self.done.called or self.failed(why))

    def failed(self, why: str) -> None:
        """The tunnel cannot go on: stop, and say why."""
        if not self.done.called:
            self.log.error("tunnel failed: {why}", why=why)
            self.done.errback(TunnelFailed(why))
        if self.service.running:
            self.service.stopService()

    def lost(self, why: str, retry: bool) -> None:
        """The control connection ended; reconnect if that can help."""
        if self.done.called:
            return
        if not (retry and self.settings.reconnect and self.remote_port is not None):
            return self.failed(why)
        if self.lost_at is None:
            self.lost_at = self.clock.seconds()
        self.log.warn("tunnel on port {port} lost: {why}; reconnecting", port=self.remote_port, why=why)

    def server_reached(self, peer) -> None:
        """A control connection is open to ``peer``: its data connections go there too, if they can."""
        address = reached(peer) if self.dial_server_at is not None else None
        # Not one to dial again as it is: the endpoint, as for the first control connection.
        self.dial_server = EndpointDialer(self.server_endpoint) if address is None else self.dial_server_at(address)

    def give_up_old_port(self) -> None:
        """Ask for the port asked for at first from now on, not the one the lost tunnel had."""
        self.lost_at = self.clock.seconds() - KEEP_PORT_FOR

    def port_to_ask(self) -> int:
        """The port of the tunnel we had, for a while after losing it; else the one asked for."""
        if self.lost_at is not None and self.clock.seconds() - self.lost_at < KEEP_PORT_FOR:
            return self.remote_port
        return self.settings.port

    def tunnel_opened(self, port: int) -> None:
        if self.remote_port not in (None, port):
            self.log.warn(
                "port {old} was not free again within {seconds:g} seconds; the tunnel is now on port {port}",
                old=self.remote_port, seconds=KEEP_PORT_FOR, port=port,
            )
        self.remote_port, self.lost_at = port, None
        self.log.info("connected to server, remote port {port}", port=port)
        self.stdout.write(f"listening at {self.settings.to}:{port}\n")
        self.stdout.flush()

    def visitor_arrived(self, id: uuid.UUID) -> None:
        local = self.connect_local()
        self.dial_server.dial(lambda: DataProtocol(self, id, local), lambda reason: self._data_failed(reason, id, local))
        self.log.info("new connection {id}", id=str(id))

    def _data_failed(self, reason: Failure, id: uuid.UUID, local: Deferred[SpliceProtocol]) -> None:
        _abandon(local)
        self.log.warn(
            "could not open data connection for {id} to {server}: {why}",
            id=str(id), server=self.server, why=describe_connect_failure(reason),
        )

    def connect_local(self) -> Deferred[SpliceProtocol]:
        made: Deferred[SpliceProtocol] = Deferred()
        self.dial_local.dial(lambda: LocalProtocol(self.settings, made), made.errback)
        return made


class LocalProtocol(SpliceProtocol):
    """A connection to the local service, for one visitor."""

    def __init__(self, settings: LocalSettings, made: Deferred[SpliceProtocol]) -> None:
        self.settings = settings
        self.made: Deferred[SpliceProtocol] | None = made

    def connectionMade(self) -> None:
        tune(self.transport, self.settings.sndbuf, self.settings.recbuf)
        made, self.made = self.made, None  # told once; a held connection need not keep it
        made.callback(self)
