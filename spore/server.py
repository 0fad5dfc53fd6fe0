"""The tunnel server's protocols: the control port, tunnels and visitors."""

from __future__ import annotations

import errno
import ipaddress
import random
import uuid
from collections import Counter, defaultdict
from typing import Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHandshakeListener, IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from spore.accepting import bound_accepts
from spore.access import peer_key, source_key
from spore.admission import Admission, share_of
from spore.announcing import Announcements
from spore.control import HANDSHAKE_TIMEOUT, TIMED_OUT, FrameProtocol
from spore.heartbeats import Heartbeats
from spore.limits import FILES_PER_CONNECTION, RESERVED_FILES
from spore.messages import (
    PORT_RESERVED,
    SECRET_WITHDRAWN,
    Accept,
    Authenticate,
    Challenge,
    ClientMessage,
    Connection,
    Error,
    Hello,
    decode_client_message,
)
from spore.metrics import ServerMetrics
from spore.pending import PendingVisitors
from spore.roster import Identity, Roster
from spore.settings import ServerSettings
from spore.shedding import TurnedAway
from spore.sockets import give_up_unacknowledged, keep_alive, set_buffers, tune
from spore.splice import SpliceProtocol
from spore.usage import Usage

RANDOM_PORT_TRIES = 150

BACKLOG = 1024
"""Connections the kernel may queue on a listening port (Twisted's default of 50
drops a burst's SYNs, and each dropped one waits a second to be sent again)."""


USABLE_FILES = 0.9
"""The part of the open-file limit that visitors may take, less what the control port needs (a margin for the rest)."""

HEADROOM = 32
"""New visitors every other tunnel keeps room for while one holds more than its equal share of the open files."""


def announced_at_once(settings: ServerSettings) -> int:
    """How many of a tunnel's visitors its client is told of before it claims any.

    Half as many as may wait, and no more than the handshake slots one
    address holds: each announced visitor's data connection takes one, and a
    data connection displaced from its slot would lose its visitor.
    """
    return max(1, min(settings.max_pending_per_tunnel // 2, share_of(settings.max_handshakes)))


class TunnelError(Exception):
    """A tunnel could not be opened; the message is bore's text for why."""


def _source(addr) -> str:
    """Who a peer counts as in the admission tables (see spore.access.source_key)."""
    return source_key(addr) or str(addr)


def _address(addr) -> str:
    host = getattr(addr, "host", None)
    if host is None:  # not an IP address (a UNIX socket given with --listen)
        return str(addr)
    return f"[{host}]:{addr.port}" if ":" in host else f"{host}:{addr.port}"


def _same_client(one: Identity | None, other: Identity | None) -> bool:
    """Whether two connections proved the same secret (or, on a server without secrets, none)."""
    if one is None or other is None:
        return one is other
    return one.secret == other.secret


class VisitorProtocol(SpliceProtocol):
    """Someone who connected to a tunnel's public port."""

    log = Logger()
    bytes_in = 0  # from the visitor, once claimed
    bytes_out = 0  # to the visitor

    def __init__(self, tunnel: Tunnel, source: str) -> None:
        self.tunnel = tunnel
        self.source = source
        self.metrics = tunnel.server.metrics
        self.id: uuid.UUID | None = None
        self.waiting = False  # for a client to claim it
        self.announced = False  # the client was told of it
        self.arrived = tunnel.server.clock.seconds()

    def connectionMade(self) -> None:
        # Read nothing until a client claims us: there is nowhere to put it.
        self.transport.pauseProducing()
        self.tunnel.visitor_arrived(self)
        # After its announcement, which the client waits for (and nothing is
        # read or sent before the claim); the sizes come from the listening socket.
        tune(self.transport, None, None)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.write_peer(data)

    def claimed(self) -> None:
        self.id = None  # used once: a forwarded visitor need not keep it
        self.tunnel.claimed(self)
        self.metrics.connections_accepted.inc()
        self.metrics.accept_latency.observe((self.tunnel.server.clock.seconds() - self.arrived) * 1000)

    def expire(self) -> None:
        port = self.tunnel.port
        self.tunnel.server.turned_away.failed("stale_visitor", f"port {port}", lambda: self.log.warn(
            "removed stale connection {id} from {visitor} on port {port}",
            id=str(self.id), visitor=_address(self.transport.getPeer()), port=port,
        ))
        self.tunnel.stop_waiting(self)
        self.metrics.connections_stale.inc()
        self.transport.loseConnection()

    def shed(self) -> None:
        """Close this unclaimed visitor to make room for a newcomer."""
        self.tunnel.stop_waiting(self)
        self.tunnel.server.pending.discard(self.id)
        self.tunnel.server.turned_away.shed("oldest_visitor", f"port {self.tunnel.port}")
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        if self.waiting:
            self.tunnel.stop_waiting(self)
            self.tunnel.server.pending.discard(self.id)
        self.tunnel.visitor_left(self)
        SpliceProtocol.connectionLost(self, reason)


class VisitorFactory(Factory):
    """Builds the visitors of one tunnel's public port."""

    noisy = False
    tunnel: Tunnel

    def logPrefix(self) -> str:
        return "Spore public port"

    def buildProtocol(self, addr) -> VisitorProtocol | None:
        tunnel = self.tunnel
        if not tunnel.server.may_hold_another(tunnel):
            # Refused before anything is built: Twisted closes it at once.
            tunnel.server.turned_away.refused("tunnel_share", f"port {tunnel.port}")
            return None
        return VisitorProtocol(tunnel, _source(addr))


class Tunnel:
    """A public port, open exactly as long as its control connection."""

    log = Logger()

    def __init__(self, control: ServerProtocol, listening: IListeningPort) -> None:
        self.control = control
        self.server = control.server
        self.listening = listening
        self.port: int = listening.getHost().port
        self.source = control.source
        self.identity = control.identity
        self.opened = self.server.clock.seconds()
        self.forwarded: set[VisitorProtocol] = set()  # claimed visitors still connected
        self.carried = Usage()  # visitors claimed, and the bytes of those gone
        # Visitors connected now, from each source: who has the most is shed
        # first and announced last, so a flood of visitors displaces its own.
        self.open_from: Counter[str] = Counter()
        self.visitors_open = 0
        limit = self.server.settings.max_pending_per_tunnel
        # No source is capped while there is room: many visitors from one
        # address (a NAT, a proxy) are ordinary.
        self.pending: Admission[VisitorProtocol] = Admission(limit, limit, weight=self.open_from.__getitem__)
        self.announcements: Announcements[VisitorProtocol] = Announcements(
            announced_at_once(self.server.settings), self.open_from.__getitem__
        )

    @property
    def name(self) -> str | None:
        """The name of the secret the tunnel was opened with, if it has one."""
        return self.identity and self.identity.name

    def start(self) -> None:
        self.control.send(Hello(self.port))
        self.server.heartbeats.add(self, self.control.write)

    def visitor_arrived(self, visitor: VisitorProtocol) -> None:
        server = self.server
        server.metrics.connections_incoming.inc()
        verdict = self.pending.admit(visitor, visitor.source)
        # Counted until it is gone, whatever the verdict.
        self.open_from[visitor.source] += 1
        self.visitors_open += 1
        server.visitors_open += 1
        if not verdict.admitted:
            server.turned_away.refused(verdict.reason, f"port {self.port}")
            visitor.transport.abortConnection()
            return
        if verdict.shed is not None:
            verdict.shed.shed()
        visitor.waiting = True
        visitor.id = server.pending.add(visitor)
        # The client hears of it first: what follows is done while it dials.
        if self.announcements.arrived(visitor, visitor.source):
            self._announce(visitor)
        self.log.info(
            "visitor {visitor} connected to port {port} as {id}",
            visitor=_address(visitor.transport.getPeer()), port=self.port, id=str(visitor.id),
        )

    def claimed(self, visitor: VisitorProtocol) -> None:
        self.stop_waiting(visitor)
        self.forwarded.add(visitor)
        self.server.forwarding.add(visitor)
        self.carried.visitors += 1
        self.server.carried[self.name].visitors += 1

    def usage(self) -> Usage:
        """What the tunnel has carried so far, its visitors still connected included."""
        usage = Usage(self.carried.visitors, self.carried.bytes_from_visitors, self.carried.bytes_to_visitors)
        for visitor in self.forwarded:
            usage.add(visitor)
        return usage

    def visitor_left(self, visitor: VisitorProtocol) -> None:
        self.visitors_open -= 1
        self.server.visitors_open -= 1
        if visitor in self.forwarded:
            self.forwarded.discard(visitor)
            self.server.forwarding.discard(visitor)
            self.carried.add(visitor)
            self.server.carried[self.name].add(visitor)
        open_from = self.open_from
        open_from[visitor.source] -= 1
        if not open_from[visitor.source]:
            del open_from[visitor.source]  # so that it holds only the sources connected now

    def _announce(self, visitor: VisitorProtocol) -> None:
        visitor.announced = True
        # The client will open a data connection for this visitor: its
        # address is owed a handshake slot for it (see ServerFactory.owed).
        self.server.awaited[self.source] += 1
        # Its data connection is on its way: shedding it now would only make
        # the client dial in vain, and tell it of another.
        self.pending.keep(visitor)
        self.control.send(Connection(visitor.id))

    def stop_waiting(self, visitor: VisitorProtocol) -> None:
        """``visitor`` is no longer waiting for the client (claimed, expired, gone or shed)."""
        if not visitor.waiting:
            return
        visitor.waiting = False
        self.pending.release(visitor)
        if visitor.announced:
            awaited = self.server.awaited
            awaited[self.source] -= 1
            if not awaited[self.source]:
                del awaited[self.source]
        following = self.announcements.left(visitor)
        if following is not None:
            self._announce(following)

    def close(self) -> Deferred:
        self.server.heartbeats.remove(self)
        return self.listening.stopListening()


@implementer(IHandshakeListener)
class ServerProtocol(FrameProtocol):
    """A connection to the control port.

    Its first message decides what it is: ``Hello`` makes it a tunnel's
    control connection, ``Accept`` a data connection spliced to a visitor.
    Until then it holds a slot of the server's admission table
    (:mod:`spore.admission`), and tells it of each step it gets through.
    """

    log = Logger()
    decode = staticmethod(decode_client_message)

    def __init__(self, server: ServerFactory) -> None:
        self.server = server
        self.clock = server.clock
        self.challenge: uuid.UUID | None = None
        self.identity: Identity | None = None  # who answered the challenge
        self.tunnel: Tunnel | None = None
        self.state = "new"

    @property
    def client(self) -> str:
        return _address(self.transport.getPeer())

    @property
    def name(self) -> str | None:
        return self.identity and self.identity.name

    @property
    def who(self) -> str:
        """The client for a log line: its name, if its secret has one, and its address."""
        name = self.name
        return f"{name} at {self.client}" if name else self.client

    @property
    def host(self) -> str:
        """The client's address, keyed as the address policies key it."""
        peer = self.transport.getPeer()
        return peer_key(peer) or str(peer)

    @property
    def source(self) -> str:
        """The client's address, keyed as the admission tables key it."""
        return _source(self.transport.getPeer())

    def connectionMade(self) -> None:
        server = self.server
        verdict = server.admission.admit(self, self.source)
        if not verdict.admitted:
            server.turned_away.refused(verdict.reason, "control port")
            self.state = "closed"
            self.transport.abortConnection()
            return
        if verdict.shed is not None:
            verdict.shed.shed()
        if server.roster.secrets:
            self.challenge = uuid.uuid4()
            self.send(Challenge(self.challenge))
            self.state = "challenged"
        else:
            self.state = "waiting"
        if self.state == "waiting":
            # Unchallenged, a client sends its first frame as soon as it is
            # connected: it is usually here already, and then it needs no deadline.
            self.read_now()
        if self.state in ("challenged", "waiting"):
            self.set_deadline(HANDSHAKE_TIMEOUT, self._timed_out)

    def messageReceived(self, message: ClientMessage) -> None:
        match self.state, message:
            case "challenged", Authenticate(tag):
                self.identity = self.server.roster.identify(self.challenge, tag)
                if self.identity is None:
                    return self._auth_failed("invalid secret", "invalid secret")
                self.state = "waiting"
                self.server.admission.progressed(self)
                self.set_deadline(HANDSHAKE_TIMEOUT, self._timed_out)
            case "challenged", _:
                self._auth_failed("no secret given", "server requires secret, but no secret was provided")
            case "waiting", Hello(port):
                self._end_handshake("opening")
                ensureDeferred(self._open_tunnel(port)).addErrback(self._internal_error, "opening a tunnel")
            case "waiting", Accept(id):
                self._end_handshake("accepting")
                self._accept(id)
            case "waiting", Authenticate():
                self.fail("unexpected authenticate")
            case _:
                self.fail("unexpected message")

    def handshakeCompleted(self) -> None:
        """The TLS handshake is done: a step forward."""
        self.server.admission.progressed(self)

    def shed(self) -> None:
        """Close this connection, stalled in its handshake, to make room for a newcomer."""
        self.server.turned_away.shed("stalled_handshake", "control port")
        self.state = "closed"
        self.cancel_deadline()
        self.transport.abortConnection()

    def _end_handshake(self, state: str) -> None:
        # A connection that failed keeps its slot until it is gone (it still
        # holds a socket), but is the first to be shed.
        if state == "closed" and self in self.server.admission:
            self.server.admission.stalled(self)
        else:
            self.server.admission.release(self)
        self.cancel_deadline()
        self.state = state

    def _auth_failed(self, what: str, why: str) -> None:
        self.server.metrics.auth_failures.inc()
        self._failed("auth_failed", lambda: self.log.warn(
            "authentication failed for {client}: {what}", client=self.client, what=what
        ))
        self.fail(why)

    def protocolError(self, why: str) -> None:
        self._failed("protocol_error", lambda: self.log.info("closing {client}: {why}", client=self.client, why=why))
        self.fail(why)

    def _failed(self, outcome: str, say: Callable[[], object]) -> None:
        self.server.metrics.control(outcome)
        self.server.turned_away.failed(outcome, "control port", say)

    def fail(self, why: str) -> None:
        """Tell the client why, then close."""
        self._end_handshake("closed")
        self._close_tunnel()
        self.send(Error(why))
        self.transport.loseConnection()
        # A peer that never reads (or a TLS handshake never finished) would
        # keep the close waiting for the Error to flush: give up after a while.
        self.set_deadline(HANDSHAKE_TIMEOUT, self.transport.abortConnection)

    def _internal_error(self, failure, what: str) -> None:
        self.log.failure("while {what} for {client}", failure, what=what, client=self.client)
        self.fail("internal server error")

    def _timed_out(self) -> None:
        self._failed("timeout", lambda: self.log.info("closing {client}: {why}", client=self.client, why=TIMED_OUT))
        self.fail(TIMED_OUT)

    async def _open_tunnel(self, port: int) -> None:
        host = self.host
        if self.server.tunnels_per_host[host] >= self.server.settings.max_tunnels_per_ip:
            self.log.warn(
                "refused tunnel for {who}: {limit} tunnels already open from {host}",
                who=self.who, client=self.client, name=self.name, limit=self.server.settings.max_tunnels_per_ip,
                host=host,
            )
            self.server.metrics.refuse("tunnels_per_ip")
            self.server.metrics.control("tunnel_refused")
            return self.fail("too many tunnels from this address")
        visitors = VisitorFactory()
        try:
            listening = await self.server.listen_public(port, visitors, self.name)
        except TunnelError as e:
            self.log.info(
                "refused tunnel for {who}: {why}", who=self.who, client=self.client, name=self.name, why=str(e)
            )
            self.server.metrics.control("tunnel_refused")
            return self.fail(str(e))
        if self.state != "opening":  # the client left while we were binding
            listening.stopListening()
            return
        self.state = "tunnel"
        self.server.tunnels_per_host[host] += 1
        self.tunnel = visitors.tunnel = Tunnel(self, listening)
        self.server.tunnels.add(self.tunnel)
        # Notice a client that vanished without a FIN: keepalive probes while
        # idle, and heartbeats left unacknowledged for two intervals.
        keep_alive(self.transport)
        give_up_unacknowledged(self.transport, max(2 * self.server.settings.heartbeat_interval, 1.0))
        self.log.info(
            "tunnel opened on port {port} for {who}", port=self.tunnel.port, who=self.who, client=self.client,
            name=self.name,
        )
        self.server.metrics.control("tunnel")
        self.tunnel.start()

    def _accept(self, id: uuid.UUID) -> None:
        pending = self.server.pending
        visitor = pending.get(id)
        if visitor is not None and not _same_client(visitor.tunnel.identity, self.identity):
            # Another client's visitor: it stays for its own client to claim.
            self.log.warn(
                "refused to hand visitor {id} to {who}: it belongs to another client's tunnel",
                who=self.who, client=self.client, name=self.name, id=str(id),
            )
            visitor = None
        elif visitor is not None:
            pending.claim(id)
        if visitor is None:
            # bore closes without a frame: a client is already forwarding
            # whatever we send now to its local service.
            self.log.warn("missing connection {id} claimed by {client}", id=str(id), client=self.client)
            self.server.metrics.control("unknown_visitor")
            self.state = "closed"
            self.transport.loseConnection()
            return
        self.state = "forwarding"
        self.setRawMode()
        self.splice(visitor)
        # The visitor's first bytes are waiting: on their way before the
        # bookkeeping and the log line.  Reading cannot close the visitor
        # here (an error aborts it on the next turn), so it is still there
        # to be counted as claimed.
        visitor.read_now()
        visitor.claimed()
        # A per-address limit (spore.policies) counts the visitor already:
        # a busy tunnel must not be throttled by its own data connections.
        stop_counting = getattr(self.transport, "stop_counting", None)
        if stop_counting is not None:
            stop_counting()
        tune(self.transport, self.server.settings.sndbuf, self.server.settings.recbuf)
        self.log.info("visitor {id} claimed by {who}", id=str(id), who=self.who, client=self.client, name=self.name)
        self.server.metrics.control("data")

    def forward(self, data: bytes) -> None:
        visitor = self.peer
        if visitor is not None:  # else it is gone, and so are the bytes meant for it
            visitor.bytes_out += len(data)
            visitor.write(data)

    def _close_tunnel(self) -> None:
        if self.tunnel is not None:
            self.server.tunnels.discard(self.tunnel)
            self.log.info(
                "tunnel on port {port} closed for {who}", port=self.tunnel.port, who=self.who, client=self.client,
                name=self.name,
            )
            self.tunnel.close()
            self.tunnel = None
            self.server.tunnels_per_host[self.host] -= 1

    def connectionLost(self, reason) -> None:
        self.server.admission.release(self)  # before _end_handshake, which would keep a failed one's slot
        self._end_handshake("closed")
        self._close_tunnel()
        FrameProtocol.connectionLost(self, reason)


class ServerFactory(Factory):
    """Builds the control port's protocols and holds what they share."""

    log = Logger()
    noisy = False

    def logPrefix(self) -> str:
        return "Spore control port"

    def __init__(
        self,
        settings: ServerSettings,
        reactor,
        rng: random.Random | None = None,
        guard_public: Callable[[Factory], Factory] = lambda factory: factory,
        metrics: ServerMetrics | None = None,
        turned_away: TurnedAway | None = None,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self.clock = reactor
        self.started = reactor.seconds()
        self.roster = Roster(settings.secrets, settings.clients)
        self.rng = rng or random.SystemRandom()
        self.guard_public = guard_public  # the policies that admit visitors
        self.metrics = metrics or ServerMetrics()
        self.pending: PendingVisitors[VisitorProtocol] = PendingVisitors(reactor, settings.pending_timeout)
        # Control connections not yet past their first message.
        capacity = settings.max_handshakes
        self.admission: Admission[ServerProtocol] = Admission(capacity, share_of(capacity), allowance=self.owed)
        self.awaited: Counter[str] = Counter()  # visitors announced to each source's tunnels, not yet claimed
        self.turned_away = turned_away or TurnedAway(reactor, self.metrics)
        self.tunnels_per_host: Counter[str] = Counter()
        self.tunnels: set[Tunnel] = set()
        self.heartbeats = Heartbeats(reactor, settings.heartbeat_interval)
        self.forwarding: set[VisitorProtocol] = set()  # claimed visitors still connected
        # By the name of their tunnel's secret (None: unnamed): visitors claimed, and the bytes of those gone.
        self.carried: defaultdict[str | None, Usage] = defaultdict(Usage)
        self.visitors_open = 0  # on every public port, claimed or not
        self.file_limit: int | None = None  # the open-file limit, once the service has raised it
        self.metrics.watch(
            tunnels=lambda: len(self.tunnels), pending=lambda: len(self.pending), forwarding=lambda: len(self.forwarding)
        )
        self.metrics.watch_usage(self.usage_by_name, lambda: self.roster.names)

    def buildProtocol(self, addr) -> ServerProtocol:
        return ServerProtocol(self)

    def may_hold_another(self, tunnel: Tunnel) -> bool:
        """Whether a new visitor of ``tunnel`` may have the open files it takes (two: its own, its data connection's).

        Visitors may hold ``USABLE_FILES`` of the open-file limit, less the
        control port's and the tunnels' own.  A tunnel holding more than an
        equal share of that gets a new visitor only if every other tunnel
        keeps room for ``HEADROOM`` more (up to its own equal share): a flood
        of visitors held open on one tunnel cannot take the files that the
        others need.
        """
        limit = self.file_limit
        if limit is None:
            return True
        others_files = RESERVED_FILES + self.settings.max_handshakes + 2 * len(self.tunnels)
        room = (USABLE_FILES * limit - others_files) // FILES_PER_CONNECTION - self.visitors_open
        share = (room + self.visitors_open) / max(1, len(self.tunnels))
        if tunnel.visitors_open < share:
            return room > 0
        kept = sum(min(HEADROOM, max(0, share - other.visitors_open)) for other in self.tunnels if other is not tunnel)
        return room > kept

    def usage_by_name(self) -> dict[str | None, tuple[int, Usage]]:
        """Tunnels open now and what has been carried, by the name of the tunnels' secret (None: unnamed)."""
        usage = {name: (0, carried + Usage()) for name, carried in self.carried.items()}
        for visitor in self.forwarding:
            name = visitor.tunnel.name
            usage.setdefault(name, (0, Usage()))[1].add(visitor)
        for tunnel in self.tunnels:
            open_, carried = usage.setdefault(tunnel.name, (0, Usage()))
            usage[tunnel.name] = (open_ + 1, carried)
        return usage

    def apply(self, roster: Roster) -> None:
        """Take on a reloaded roster: tunnels whose secret it no longer accepts are closed, the rest keep going."""
        self.roster = roster
        for tunnel in list(self.tunnels):
            control = tunnel.control
            identity = tunnel.identity and roster.recognise(tunnel.identity)
            if identity is None and (tunnel.identity is not None or roster.secrets):
                self.log.info(
                    "closing tunnel on port {port} for {who}: its secret is no longer accepted",
                    port=tunnel.port, who=control.who, client=control.client, name=control.name,
                )
                control.fail(SECRET_WITHDRAWN)
                continue
            if identity is not None and identity.name != tunnel.name:
                self.log.info(
                    "tunnel on port {port} for {who} is now {name}'s", port=tunnel.port, who=control.who,
                    name=identity.name or "unnamed",
                )
            tunnel.identity = control.identity = identity
            owner = roster.reservations.owner(tunnel.port)
            if owner not in (None, tunnel.name):
                self.log.warn(
                    "port {port} is now reserved for {owner}; {who} holds it until that tunnel closes",
                    port=tunnel.port, owner=owner, who=control.who,
                )

    def owed(self, source: str) -> int:
        """Handshake slots ``source`` may hold beyond its share: one per data connection its tunnels were asked for."""
        return self.awaited.get(source, 0)

    async def drain(self, timeout: float) -> None:
        """Shut down gently: close every tunnel and waiting visitor, and give forwarded ones ``timeout`` seconds."""
        controls = [tunnel.control for tunnel in self.tunnels]
        for tunnel in list(self.tunnels):
            tunnel.control.fail("server is shutting down")
            for visitor in list(tunnel.pending):
                visitor.transport.loseConnection()
        deadline = self.clock.seconds() + timeout
        # Wait for the Error frames to go out (the reactor's own shutdown
        # would drop them unsent), and for the forwarded connections to end.
        while (self.forwarding or any(c.transport.connected for c in controls)) and self.clock.seconds() < deadline:
            await deferLater(self.clock, min(0.05, timeout))
        if self.forwarding:
            self.log.warn("closing {count} forwarded connections still open", count=len(self.forwarding))
            for visitor in list(self.forwarding):
                visitor.transport.abortConnection()
                if visitor.peer is not None:
                    visitor.peer.transport.abortConnection()
        self.turned_away.stop()

    async def listen_public(self, port: int, visitors: VisitorFactory, name: str | None = None) -> IListeningPort:
        """Open a public port for a tunnel of the client called ``name``, as bore would (same errors).

        A random port is never one reserved for a name; a port asked for by
        number is refused if it is reserved for another name.
        """
        settings = self.settings
        reservations = self.roster.reservations
        if port == 0:
            for _ in range(RANDOM_PORT_TRIES):
                port = reservations.pick_free(self.rng, settings.min_port, settings.max_port)
                if port is None:
                    break
                try:
                    return await self._bind(port, visitors)
                except TunnelError:
                    continue
            raise TunnelError("failed to find an available port")
        if not settings.min_port <= port <= settings.max_port:
            raise TunnelError("client port number not in allowed range")
        if not self.roster.may_take(name, port):
            raise TunnelError(PORT_RESERVED)
        return await self._bind(port, visitors)

    async def _bind(self, port: int, visitors: VisitorFactory) -> IListeningPort:
        host = self.settings.bind_tunnels
        endpoint_type = TCP6ServerEndpoint if ipaddress.ip_address(host).version == 6 else TCP4ServerEndpoint
        endpoint = endpoint_type(self.reactor, port, backlog=BACKLOG, interface=host)
        try:
            listening = await endpoint.listen(self.guard_public(visitors))
        except CannotListenError as e:
            code = getattr(e.socketError, "errno", None)
            if code == errno.EADDRINUSE:
                raise TunnelError("port already in use") from e
            if code == errno.EACCES:
                raise TunnelError("permission denied") from e
            raise TunnelError("failed to bind to port") from e
        # Accepted sockets inherit the listening socket's buffer sizes.
        set_buffers(listening, self.settings.sndbuf, self.settings.recbuf)
        bound_accepts(listening)
        return listening
