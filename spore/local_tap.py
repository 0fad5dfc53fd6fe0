"""``spore local`` and ``twist spore-local``: options and the service they make."""

from __future__ import annotations

import os
import sys

from twisted.application.service import Service
from twisted.internet.endpoints import HostnameEndpoint
from twisted.python import usage

from spore import options as check
from spore.control import HANDSHAKE_TIMEOUT
from spore.local import LocalClient, TunnelFailed
from spore.settings import DEFAULT_CONTROL_PORT, LocalSettings

_ENVIRONMENT = {
    "local-port": ("SPORE_LOCAL_PORT", "BORE_LOCAL_PORT"),
    "to": ("SPORE_SERVER", "BORE_SERVER"),
    "secret": ("SPORE_SECRET", "BORE_SECRET"),
    "control-port": ("SPORE_CONTROL_PORT",),
}


class Options(check.SporeOptions):
    """The options of ``spore local``, also those of ``twist spore-local``."""

    synopsis = "[LOCAL_PORT] --to SERVER [options]"
    longdesc = (
        "Expose the TCP service at LOCAL_HOST:LOCAL_PORT through the tunnel server SERVER, "
        "which prints the public port as 'listening at SERVER:PORT'."
    )
    optParameters = [
        ["local-port", None, None, "Local port to expose (or give it as the argument) [env SPORE_LOCAL_PORT]"],
        ["local-host", "l", "localhost", "Local host to expose"],
        ["to", "t", None, "Address of the tunnel server [env SPORE_SERVER]"],
        ["port", "p", "0", "Public port to ask for (0: any free one)"],
        ["secret", "s", None, "Secret for the server [env SPORE_SECRET]"],
        ["control-port", None, None, f"Server's control port [default: {DEFAULT_CONTROL_PORT}; env SPORE_CONTROL_PORT]"],
    ]

    def parseArgs(self, local_port: str | None = None) -> None:
        if local_port is not None:
            if self["local-port"] not in (None, local_port):
                raise usage.UsageError(f"local port given twice: {local_port} and --local-port {self['local-port']}")
            self["local-port"] = local_port

    def postOptions(self) -> None:
        check.fill_from_environment(self, self.environ, _ENVIRONMENT)
        if self["local-port"] is None:
            raise usage.UsageError("which local port? e.g. 'spore local 3000 --to SERVER'")
        if not self["to"]:
            raise usage.UsageError("which server? give --to SERVER (or set SPORE_SERVER)")
        self.settings = LocalSettings(
            local_port=check.port(self["local-port"], "local-port"),
            local_host=self["local-host"],
            to=self["to"],
            port=check.port(self["port"], "port", lowest=0),
            control_port=check.port(self["control-port"] or DEFAULT_CONTROL_PORT, "control-port"),
            secret=self["secret"] or None,
        )


class LocalService(Service):
    """Runs one tunnel; ends the process with status 1 when it fails."""

    exit_status = 0

    def __init__(self, settings: LocalSettings, reactor) -> None:
        self.reactor = reactor
        server = HostnameEndpoint(reactor, settings.to, settings.control_port, timeout=HANDSHAKE_TIMEOUT)
        local = HostnameEndpoint(
            reactor, settings.local_host, settings.local_port, timeout=settings.local_connect_timeout
        )
        self.client = LocalClient(settings, reactor, server, local)

    def startService(self) -> None:
        super().startService()
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

    return LocalService(options.settings, reactor)
