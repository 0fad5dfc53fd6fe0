"""``spore server`` and ``twist spore-server``: options and the service they make."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Callable

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from spore import options as check
from spore import tls
from spore.accepting import bound_accepts
from spore.access import AccessRules
from spore.handshake_budget import HandshakeBudget, wrap_server_factory
from spore.limits import announce_open_file_limit
from spore.metrics import ServerMetrics, metrics_site
from spore.passwords import PasswordFileChecker, PasswordFileError
from spore.policies import AddressFilter, LimitPerPeer, PeerLimit
from spore.roster import NamedClient, Roster, RosterError, read_clients
from spore.server import BACKLOG, ServerFactory
from spore.settings import DEFAULT_CONTROL_PORT, ServerSettings
from spore.shedding import TurnedAway
from spore.status_report import report
from spore.status_site import endpoint_problem, is_loopback_endpoint, status_site


class Options(check.SporeOptions):
    """The options of ``spore server``, also those of ``twist spore-server``."""

    synopsis = "[options]"
    longdesc = (
        "Run a tunnel server: clients connect to its control port and each gets a "
        "public port whose visitors are forwarded to the client. Speaks bore's protocol."
    )
    environment = {
        "min-port": ("SPORE_MIN_PORT", "BORE_MIN_PORT"),
        "max-port": ("SPORE_MAX_PORT", "BORE_MAX_PORT"),
        "secret": ("SPORE_SECRET", "BORE_SECRET"),
        "control-port": ("SPORE_CONTROL_PORT",),
        "bind-addr": ("SPORE_BIND_ADDR",),
        "metrics-port": ("SPORE_METRICS_PORT",),
    }
    default_values = {
        "min-port": "1024",
        "max-port": "65535",
        "bind-addr": "0.0.0.0",
        "control-port": str(DEFAULT_CONTROL_PORT),
        "heartbeat-interval": "0.5",
        "max-pending-per-tunnel": "128",
        "max-tunnels-per-ip": "32",
        "max-handshakes": "1024",
        "drain-timeout": "5",
    }
    config_lists = ("allow", "deny", "secret")
    optParameters = [
        ["min-port", None, None, "Lowest public port handed out"],
        ["max-port", None, None, "Highest public port handed out"],
        ["secret", "s", None, "Secret that clients must prove they know; several, comma-separated, are each accepted"],
        ["secret-file", None, None, "File with one accepted secret per line (keeps them out of the process list; "
         "reread on SIGHUP)"],
        ["clients", None, None, "JSON file of named clients, each with its secret and the ports reserved for it "
         '(e.g. {"alice": {"secret": "...", "ports": [20345, "21000-21009"]}}; reread on SIGHUP)'],
        ["bind-addr", None, None, "Address of the control listener"],
        ["bind-tunnels", None, None, "Address of the public listeners [default: --bind-addr]"],
        ["control-port", None, None, "Control port"],
        ["listen", None, None, "Twisted endpoint for the control listener, e.g. tcp:7835:interface=127.0.0.1 "
         "or systemd:domain=INET:index=0 (replaces --bind-addr and --control-port)"],
        ["heartbeat-interval", None, None, "Seconds between heartbeats to idle clients"],
        ["drain-timeout", None, None, "Seconds forwarded connections get to finish when the server stops"],
        ["max-pending-per-tunnel", None, None, "Visitors that may wait for a tunnel's client at a time; "
         "a newcomer then displaces the oldest of the busiest address"],
        ["max-tunnels-per-ip", None, None, "Tunnels one client address may hold open"],
        ["max-handshakes", None, None, "Control connections that may be in their handshake at a time "
         "(one address holds at most an eighth of them)"],
        ["allow", None, None, "Addresses and networks that may connect, comma- or space-separated "
         "(e.g. 10.0.0.0/8,2001:db8::/32); the most specific --allow/--deny entry decides"],
        ["deny", None, None, "Addresses and networks that may not connect"],
        ["max-conns-per-ip", None, None, "Connections one address may have open at a time, control and "
         "public ports together [default: no limit]"],
        ["certfile", None, None, "With --tls: the server's certificate (PEM, intermediates after it)"],
        ["keyfile", None, None, "With --tls: the certificate's private key (PEM)"],
        ["cacertfile", None, None, "With --tls: require client certificates signed by this CA (mutual TLS)"],
        ["metrics-port", None, None, "Serve Prometheus metrics at http://BIND_ADDR:PORT/metrics"],
        ["metrics", None, None, "Twisted endpoint for the metrics page, e.g. tcp:9464:interface=127.0.0.1 "
         "(replaces --metrics-port)"],
        ["status-port", None, None, "Serve the status page (every tunnel, its client and its traffic) at "
         "http://127.0.0.1:PORT/, on loopback only"],
        ["status", None, None, "Twisted endpoint for the status page (replaces --status-port); beyond loopback "
         "it must be TLS with --status-passwords, e.g. ssl:9465:privateKey=key.pem:certKey=cert.pem"],
        ["status-passwords", None, None, "File of 'user:hash' lines (make one with: spore password USER) whose "
         "users may see the status page; it then also serves /metrics, behind the same password"],
        ["sndbuf", None, None, "SO_SNDBUF, in bytes, of every socket carrying tunnelled bytes [default: the system's]"],
        ["recbuf", None, None, "SO_RCVBUF, in bytes, of every socket carrying tunnelled bytes [default: the system's]"],
    ]
    optFlags = [
        ["tls", None, "Serve the control port (and so every data connection) over TLS"],
    ]

    def configure(self) -> None:
        min_port, max_port = self.port("min-port"), self.port("max-port")
        if min_port > max_port:
            raise usage.UsageError(
                f"{self.label('min-port')} ({min_port}) is greater than {self.label('max-port')} ({max_port})"
            )
        bind_addr = self.ip_address("bind-addr")
        self.listen = _with_backlog(self["listen"]) if self["listen"] else (
            f"tcp:{self.port('control-port')}:interface={quoteStringArgument(bind_addr)}:backlog={BACKLOG}"
        )
        secrets, clients = self.read_roster(min_port, max_port)
        self.settings = ServerSettings(
            min_port=min_port,
            max_port=max_port,
            secrets=secrets,
            clients=clients,
            bind_tunnels=self.ip_address("bind-tunnels") if self["bind-tunnels"] else bind_addr,
            heartbeat_interval=self.seconds("heartbeat-interval"),
            max_pending_per_tunnel=self.count("max-pending-per-tunnel"),
            max_tunnels_per_ip=self.count("max-tunnels-per-ip"),
            max_handshakes=self.count("max-handshakes"),
            drain_timeout=self.seconds("drain-timeout"),
            sndbuf=self["sndbuf"] and self.count("sndbuf"),
            recbuf=self["recbuf"] and self.count("recbuf"),
        )
        try:
            self.rules = AccessRules.parse(self["allow"], self["deny"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.max_conns_per_ip = self["max-conns-per-ip"] and self.count("max-conns-per-ip")
        self.tls_options = self._tls_options()
        self.metrics_listen = self["metrics"] or (
            self["metrics-port"] and f"tcp:{self.port('metrics-port')}:interface={quoteStringArgument(bind_addr)}"
        )
        self._status_options()

    def _status_options(self) -> None:
        self.status_listen = self["status"] or (
            self["status-port"] and f"tcp:{self.port('status-port')}:interface=127.0.0.1"
        )
        passwords = self.status_passwords = self["status-passwords"]
        if not self.status_listen:
            if passwords:
                raise usage.UsageError("--status-passwords is for the status page: add --status-port or --status")
            return
        self.status_loopback = bool(is_loopback_endpoint(self.status_listen))
        problem = endpoint_problem(self.status_listen, passwords)
        if problem:
            raise usage.UsageError(f"{self.label('status')}: {problem} (it shows every client's address)")
        if passwords:
            try:
                PasswordFileChecker(passwords)
            except PasswordFileError as e:
                raise usage.UsageError(f"--status-passwords {e}") from None

    def _tls_options(self):
        files = {name: self[name] for name in ("certfile", "keyfile", "cacertfile")}
        if not self["tls"]:
            if any(files.values()):
                raise usage.UsageError("--certfile, --keyfile and --cacertfile are for --tls: add --tls")
            return None
        if not (files["certfile"] and files["keyfile"]):
            raise usage.UsageError("--tls needs --certfile and --keyfile")
        try:
            return tls.server_options(**files)
        except tls.TLSConfigError as e:
            raise usage.UsageError(str(e)) from None

    def read_roster(self, min_port: int, max_port: int) -> tuple[tuple[str, ...], tuple[NamedClient, ...]]:
        """The unnamed secrets and the named clients, from the options and the files they name (again on reload)."""
        secrets, clients = self._secrets(), ()
        if self["clients"]:
            try:
                clients = read_clients(self["clients"])
            except RosterError as e:
                raise usage.UsageError(f"--clients {e}") from None
        try:
            roster = Roster(secrets, clients)
        except RosterError as e:
            raise usage.UsageError(f"--clients {self['clients']}: {e}") from None
        for client in roster.clients:
            for first, last in client.ports:
                if first < min_port or last > max_port:
                    ports = str(first) if first == last else f"{first}-{last}"
                    raise usage.UsageError(
                        f"--clients {self['clients']}: {client.name}'s ports {ports} are outside the public "
                        f"ports, {self.label('min-port')} {min_port} to {self.label('max-port')} {max_port}"
                    )
        return secrets, clients

    def _secrets(self) -> tuple[str, ...]:
        given = self["secret"] or ""
        secrets = [s.strip() for s in (given if isinstance(given, list) else given.split(","))]
        if self["secret-file"]:
            path = self["secret-file"]
            try:
                with open(path, encoding="utf-8") as f:
                    from_file = [line.strip() for line in f if line.strip() and not line.startswith("#")]
            except (OSError, UnicodeDecodeError) as e:
                raise usage.UsageError(f"--secret-file {path}: {getattr(e, 'strerror', None) or e}") from None
            if not from_file:
                raise usage.UsageError(f"--secret-file {path} holds no secret")
            secrets += from_file
        return tuple(dict.fromkeys(s for s in secrets if s))


def _with_backlog(description: str) -> str:
    """An endpoint string that queues BACKLOG connections, unless it says how many itself.

    Twisted's default of 50 overflows in a flood, and a good client's SYN
    dropped from a full queue waits a second or more to be sent again.
    """
    kind = description.partition(":")[0].lower()
    if kind in ("tcp", "tcp6", "ssl", "unix") and "backlog=" not in description:
        return f"{description}:backlog={BACKLOG}"
    return description


@implementer(IStreamServerEndpoint)
class _Announcing:
    """An endpoint that logs where it listens once it does, and accepts a few at a time (spore.accepting)."""

    log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, what: str) -> None:
        self.endpoint = endpoint
        self.what = what

    def listen(self, factory):
        return self.endpoint.listen(factory).addCallback(self._listening)

    def _listening(self, port):
        bound_accepts(port)
        address = port.getHost()
        self.log.info(
            "{what} listening on {address}", what=self.what, address=f"{address.host}:{address.port}"
        )
        return port


@contextmanager
def _explaining_listen_failure():
    try:
        yield
    except CannotListenError as e:
        where = f"{e.interface or '0.0.0.0'}:{e.port}"
        why = getattr(e.socketError, "strerror", None) or str(e.socketError)
        raise SystemExit(
            f"Error: cannot listen on {where}: {why}. Is another tunnel server running "
            f"there? Choose another port with --control-port (or --listen)."
        ) from e


class ServerService(MultiService):
    """The server: its listeners, which fail the start clearly, and a gentle stop.

    Stopping closes the listeners, tells every client the server is shutting
    down, and gives forwarded connections ``drain_timeout`` seconds to end;
    a second SIGINT or SIGTERM meanwhile ends the process at once.
    """

    log = Logger()
    status_passwords: PasswordFileChecker | None = None  # the status page's, reread with the rest

    def __init__(self, factory: ServerFactory, drain_timeout: float, reread: Callable[[], Roster]) -> None:
        super().__init__()
        self.factory = factory
        self.drain_timeout = drain_timeout
        self.reread = reread

    def reload(self) -> None:
        """Read the secrets, clients and status password files again and apply what they say now (SIGHUP)."""
        self._reload_roster()
        if self.status_passwords is not None:
            try:
                users = self.status_passwords.reload()
            except PasswordFileError as e:
                self.log.error("reload failed, the status page's users stay: --status-passwords {why}", why=str(e))
            else:
                self.log.info("reloaded: {users} status page users", users=users)

    def _reload_roster(self) -> None:
        try:
            roster = self.reread()
        except usage.UsageError as e:
            self.log.error("reload failed, the secrets and clients in use stay: {why}", why=str(e))
            return
        self.factory.apply(roster)
        self.log.info(
            "reloaded: {secrets} secrets accepted, {names} of them named, {reserved} ports reserved",
            secrets=len(roster.secrets), names=len(roster.names),
            reserved=sum(last - first + 1 for client in roster.clients for first, last in client.ports),
        )

    def stopService(self) -> Deferred:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop_now)
        self.log.info("stopping: forwarded connections get {seconds:g} s to finish", seconds=self.drain_timeout)
        d = super().stopService()
        return d.addCallback(lambda _: ensureDeferred(self.factory.drain(self.drain_timeout)))

    def _stop_now(self, signum, frame) -> None:
        os.write(2, b"second signal: stopping at once\n")
        os._exit(1)

    def privilegedStartService(self) -> None:
        with _explaining_listen_failure():
            super().privilegedStartService()

    def startService(self) -> None:
        self.factory.file_limit = announce_open_file_limit(self.log)
        reactor = self.factory.reactor
        signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(self.reload))
        with _explaining_listen_failure():
            super().startService()


class _Guard:
    """Puts a factory behind the address rules and the per-address limit, where set."""

    def __init__(self, options: Options, turned_away: TurnedAway) -> None:
        self.rules = options.rules
        self.limit = options.max_conns_per_ip and PeerLimit(options.max_conns_per_ip)
        self.turned_away = turned_away

    def __call__(
        self, factory: Factory, where: str = "public ports", exempt: Callable[[str], bool] = lambda host: False
    ) -> Factory:
        def refused(reason: str) -> Callable[[], None]:
            return lambda: self.turned_away.refused(reason, where)

        if self.limit:
            factory = LimitPerPeer(factory, self.limit, exempt, on_refused=refused("per_ip_limit"))
        if self.rules.restricts:
            factory = AddressFilter(factory, self.rules, on_refused=refused("address"))
        return factory


def _listening(description: str, factory: Factory, option: str, what: str, reactor):
    try:
        service = strports.service(description, factory, reactor=reactor)
    except (ValueError, KeyError, IndexError) as e:
        raise SystemExit(f"Error: {option} {description!r} is not a usable endpoint: {e}") from e
    service.endpoint = _Announcing(service.endpoint, what)
    return service


def makeService(options: Options) -> ServerService:
    from twisted.internet import reactor

    metrics = ServerMetrics()
    turned_away = TurnedAway(reactor, metrics)
    guard = _Guard(options, turned_away)
    factory = ServerFactory(options.settings, reactor, guard_public=guard, metrics=metrics, turned_away=turned_away)
    served = factory
    if options.tls_options is not None:
        budget = HandshakeBudget(
            reactor,
            on_spent=metrics.tls_handshake_seconds.inc,
            on_waiting=metrics.tls_handshakes_delayed.inc,
            weight=factory.admission.held_by,
        )
        served = wrap_server_factory(factory, options.tls_options, budget)
    # A tunnel's owner may exceed its budget on the control port: its data
    # connections count only until they claim their visitors.
    guarded = guard(served, "control port", exempt=lambda host: factory.tunnels_per_host[host] > 0)
    settings = options.settings
    service = ServerService(
        factory, settings.drain_timeout, lambda: Roster(*options.read_roster(settings.min_port, settings.max_port))
    )
    _listening(options.listen, guarded, "--listen", "server", reactor).setServiceParent(service)
    if options.metrics_listen:
        site = metrics_site(metrics.registry)
        _listening(options.metrics_listen, site, "--metrics", "metrics", reactor).setServiceParent(service)
    if options.status_listen:
        site = status_site(
            lambda: report(factory, reactor.seconds()), metrics.registry,
            passwords=options.status_passwords, loopback=options.status_loopback, reactor=reactor,
        )
        _listening(options.status_listen, site, "--status", "status page", reactor).setServiceParent(service)
        service.status_passwords = site.passwords
    return service
