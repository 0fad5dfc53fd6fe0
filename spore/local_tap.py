"""``spore local`` and ``twist spore-local``: options and the service they make."""

from __future__ import annotations

import os
import sys
from typing import Callable

from twisted.application.service import Service
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from spore import options as check
from spore import tls
from spore.control import HANDSHAKE_TIMEOUT
from spore.dialing import Dialer, EndpointDialer, RememberingDialer, TCPDialer, tcp_dialer
from spore.limits import announce_open_file_limit
from spore.local import LocalClient, TunnelFailed
from spore.settings import DEFAULT_CONTROL_PORT, LocalSettings


class Options(check.SporeOptions):
    """The options of ``spore local``, also those of ``twist spore-local``."""

    synopsis = "[LOCAL_PORT] --to SERVER [options]"
    longdesc = (
        "Expose the TCP service at LOCAL_HOST:LOCAL_PORT through the tunnel server SERVER, "
        "which prints the public port as 'listening at SERVER:PORT'."
    )
    environment = {
        "local-port": ("SPORE_LOCAL_PORT", "BORE_LOCAL_PORT"),
        "to": ("SPORE_SERVER", "BORE_SERVER"),
        "secret": ("SPORE_SECRET", "BORE_SECRET"),
        "control-port": ("SPORE_CONTROL_PORT",),
    }
    default_values = {
        "local-host": "localhost",
        "port": "0",
        "control-port": str(DEFAULT_CONTROL_PORT),
        "heartbeat-timeout": "8",
        "max-retry-interval": "30",
    }
    config_aliases = {"client_certfile": "certfile", "client_keyfile": "keyfile"}
    optParameters = [
        ["local-port", None, None, "Local port to expose (or give it as the argument)"],
        ["local-host", "l", None, "Local host to expose"],
        ["to", "t", None, "Address of the tunnel server"],
        ["port", "p", None, "Public port to ask for (0: any free one)"],
        ["secret", "s", None, "Secret for the server"],
        ["control-port", None, None, "Server's control port"],
        ["cacertfile", None, None, "With --tls: trust this CA for the server's certificate instead of the system's"],
        ["certfile", None, None, "With --tls: present this client certificate (PEM)"],
        ["keyfile", None, None, "With --tls: the client certificate's private key (PEM)"],
        ["connect", None, None, "Twisted client endpoint to reach the server, e.g. tcp:host=example.com:port=7835 "
         "(replaces --to and --control-port for the dialing; add --tls for Spore's TLS on top)"],
        ["heartbeat-timeout", None, None, "Seconds of silence from the server after which it is taken for gone"],
        ["max-retry-interval", None, None, "Longest wait, in seconds, between attempts to reconnect"],
        ["sndbuf", None, None, "SO_SNDBUF, in bytes, of every socket carrying tunnelled bytes [default: the system's]"],
        ["recbuf", None, None, "SO_RCVBUF, in bytes, of every socket carrying tunnelled bytes [default: the system's]"],
    ]
    optFlags = [
        ["tls", None, "Talk TLS to the server, checking its certificate and the name given in --to"],
        ["insecure", None, "With --tls: do not check the server's certificate (says so each time it connects)"],
        ["no-reconnect", None, "Exit when the connection to the server is lost, as bore does, instead of reconnecting"],
    ]

    def parseArgs(self, local_port: str | None = None) -> None:
        if local_port is not None:
            if self["local-port"] not in (None, local_port):
                raise usage.UsageError(f"local port given twice: {local_port} and --local-port {self['local-port']}")
            self["local-port"] = local_port

    def configure(self) -> None:
        if self["local-port"] is None:
            raise usage.UsageError("which local port? e.g. 'spore local 3000 --to SERVER'")
        if self["connect"]:
            self["to"] = self["to"] or _endpoint_host(self["connect"])
        if not self["to"]:
            raise usage.UsageError("which server? give --to SERVER (or set SPORE_SERVER)")
        self.tls_options = self._tls_options()
        self.settings = LocalSettings(
            local_port=self.port("local-port"),
            local_host=self["local-host"],
            to=self["to"],
            port=self.port("port", lowest=0),
            control_port=self.port("control-port"),
            secret=self["secret"] or None,
            tls=self["tls"] or (self["connect"] or "").startswith(("tls:", "ssl:")),
            sndbuf=self["sndbuf"] and self.count("sndbuf"),
            recbuf=self["recbuf"] and self.count("recbuf"),
            reconnect=not self["no-reconnect"],
            heartbeat_timeout=self.seconds("heartbeat-timeout"),
            max_retry_interval=self.seconds("max-retry-interval"),
        )

    def _tls_options(self):
        files = {name: self[name] for name in ("cacertfile", "certfile", "keyfile")}
        if not self["tls"]:
            if any(files.values()) or self["insecure"]:
                raise usage.UsageError("--cacertfile, --certfile, --keyfile and --insecure are for --tls: add --tls")
            return None
        if self["insecure"] and files["cacertfile"]:
            raise usage.UsageError("--insecure checks no certificate: drop --cacertfile or --insecure")
        try:
            return tls.client_options(self["to"], insecure=self["insecure"], **files)
        except tls.TLSConfigError as e:
            raise usage.UsageError(str(e)) from None


def _endpoint_host(description: str) -> str | None:
    """The host= of a client endpoint description, to name the server in messages."""
    for part in description.split(":")[1:]:
        if part.startswith("host="):
            return part[len("host="):]
    return None


@implementer(IStreamClientEndpoint)
class _Unverified:
    """A TLS endpoint that warns, each time it connects, that it checks no certificate."""

    log = Logger()

    def __init__(self, endpoint: IStreamClientEndpoint, server: str) -> None:
        self.endpoint, self.server = endpoint, server

    def connect(self, factory):
        self.log.warn(
            "not checking the certificate of {server} (--insecure): anyone on the way can read and change the tunnel",
            server=self.server,
        )
        return self.endpoint.connect(factory)


def dial(reactor, host: str, port: int, timeout: float) -> IStreamClientEndpoint:
    """An endpoint to host:port; an IP address skips name resolution, a thread's round trip per connection."""
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return HostnameEndpoint(reactor, host, port, timeout=timeout)


def server_endpoint(options: Options, reactor, address: str | None = None) -> IStreamClientEndpoint:
    """How to reach the server: --connect, or --to (or the IP ``address`` it resolved to) and --control-port; then --tls on top."""
    settings = options.settings
    if options["connect"]:
        try:
            endpoint = clientFromString(reactor, options["connect"])
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"Error: --connect {options['connect']!r} is not a usable endpoint: {e}") from e
    else:
        endpoint = dial(reactor, address or settings.to, settings.control_port, HANDSHAKE_TIMEOUT)
    if options.tls_options is None:
        return endpoint
    # The certificate is checked against --to whatever address is dialled.
    endpoint = tls.wrap_client_endpoint(endpoint, options.tls_options)
    return _Unverified(endpoint, f"{settings.to}:{settings.control_port}") if options["insecure"] else endpoint


def server_dialer_at(options: Options, reactor) -> Callable[[str], Dialer] | None:
    """What dials the server at the IP address a control connection reached; None with --connect, which says how."""
    if options["connect"]:
        return None
    if options.tls_options is None:
        port = options.settings.control_port
        return lambda address: TCPDialer(reactor, address, port, HANDSHAKE_TIMEOUT)
    return lambda address: EndpointDialer(server_endpoint(options, reactor, address))


class LocalService(Service):
    """Runs one tunnel; ends the process with status 1 when it fails."""

    log = Logger()

    exit_status = 0

    def __init__(
        self,
        settings: LocalSettings,
        reactor,
        server: IStreamClientEndpoint,
        dial_server_at: Callable[[str], Dialer] | None = None,
    ) -> None:
        """``dial_server_at``: see LocalClient."""
        self.reactor = reactor
        host, port, timeout = settings.local_host, settings.local_port, settings.local_connect_timeout
        local = dial(reactor, host, port, timeout)
        self.client = LocalClient(
            settings, reactor, server, local,
            dial_local=tcp_dialer(reactor, host, port, timeout) or RememberingDialer(reactor, local, port, timeout),
            dial_server_at=dial_server_at,
        )

    def startService(self) -> None:
        super().startService()
        announce_open_file_limit(self.log)
        self.reactor.addSystemEventTrigger("after", "shutdown", self._exit_if_failed)
        self.client.start().addErrback(self._failed)

    def stopService(self) -> None:
        super().stopService()
        self.client.stop()

    def _failed(self, reason) -> None:
        reason.trap(TunnelFailed)
        sys.__stderr__.write(f"Error: {reason.getErrorMessage()}\n")
        sys.__stderr__.flush()
        self.exit_status = 1
        if self.reactor.running:
            self.reactor.stop()

    def _exit_if_failed(self) -> None:
        # twist and twistd always exit with status 0 once the reactor stops;
        # a failed tunnel must not look like success to a supervisor.
        if self.exit_status:
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                stream.flush()
            os._exit(self.exit_status)


def makeService(options: Options) -> LocalService:
    from twisted.internet import reactor

    return LocalService(
        options.settings, reactor, server_endpoint(options, reactor), dial_server_at=server_dialer_at(options, reactor)
    )
