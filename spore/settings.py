"""What a server or a local client is asked to do, once options are parsed."""

from __future__ import annotations

from dataclasses import dataclass

from spore.roster import NamedClient

DEFAULT_CONTROL_PORT = 7835


@dataclass(frozen=True)
class ServerSettings:
    """A tunnel server's behaviour, apart from where it listens for control."""

    min_port: int = 1024
    max_port: int = 65535
    secrets: tuple[str, ...] = ()  # unnamed ones
    clients: tuple[NamedClient, ...] = ()  # named ones, with the ports reserved for them
    bind_tunnels: str = "0.0.0.0"
    heartbeat_interval: float = 0.5
    pending_timeout: float = 10.0
    max_pending_per_tunnel: int = 128
    max_tunnels_per_ip: int = 32
    max_handshakes: int = 1024
    drain_timeout: float = 5.0  # seconds forwarded connections get when the server stops
    sndbuf: int | None = None  # SO_SNDBUF of sockets carrying tunnelled bytes; None: the system's
    recbuf: int | None = None  # SO_RCVBUF likewise


@dataclass(frozen=True)
class LocalSettings:
    """A local client: which service to expose through which server."""

    local_port: int
    to: str
    local_host: str = "localhost"
    port: int = 0
    control_port: int = DEFAULT_CONTROL_PORT
    secret: str | None = None
    local_connect_timeout: float = 5.0
    tls: bool = False  # only to word hints: the endpoint does the TLS
    reconnect: bool = True
    heartbeat_timeout: float = 8.0  # silence after which the server is taken for gone
    max_retry_interval: float = 30.0
    sndbuf: int | None = None
    recbuf: int | None = None
