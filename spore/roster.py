"""Who may open tunnels: the secrets a server accepts, the names they carry, the ports kept for them (no Twisted here).

Names come from a clients file of their own (``--clients``), so that a
``--secret-file`` reads as it always did: every line of it is a secret, and
a client with one of them has no name.  A clients file is a JSON object::

    {
      "alice": {"secret": "correct horse battery", "ports": [20345, "21000-21009"]},
      "bob": {"secret": "staple"}
    }
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from spore import auth
from spore.reservations import PortRange, Reservations, parse_ports

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
CLIENT_KEYS = {"secret", "ports"}


class RosterError(ValueError):
    """Secrets or names that cannot be used together; the message says which and where."""


@dataclass(frozen=True)
class NamedClient:
    name: str
    secret: str = field(repr=False)
    ports: tuple[PortRange, ...] = ()


@dataclass(frozen=True)
class Identity:
    """Who answered a challenge: the secret it proved (never shown) and that secret's name, if it has one."""

    secret: str = field(repr=False)
    name: str | None = None


class Roster:
    """The secrets a server accepts, who each one is, and the ports reserved for names."""

    def __init__(self, secrets: Iterable[str] = (), clients: Iterable[NamedClient] = ()) -> None:
        self.clients = tuple(clients)
        self._names: dict[str, str | None] = dict.fromkeys(secrets)
        for client in self.clients:
            if client.secret in self._names:
                other = self._names[client.secret]
                where = f"{other}'s too" if other else "also given by --secret or --secret-file"
                raise RosterError(f"{client.name}'s secret is {where}: one secret, one name")
            self._names[client.secret] = client.name
        self.secrets = tuple(self._names)
        self.names = tuple(client.name for client in self.clients)
        try:
            self.reservations = Reservations({client.name: client.ports for client in self.clients})
        except ValueError as e:
            raise RosterError(str(e)) from None

    def identify(self, challenge: uuid.UUID, tag: str) -> Identity | None:
        """Who answered ``challenge`` with ``tag``, or None if no accepted secret gives that answer."""
        secret = auth.matching(self.secrets, challenge, tag)
        return None if secret is None else Identity(secret, self._names[secret])

    def recognise(self, identity: Identity) -> Identity | None:
        """``identity`` as this roster knows it (its name may have changed); None if its secret is not accepted now."""
        if identity.secret not in self._names:
            return None
        return Identity(identity.secret, self._names[identity.secret])

    def may_take(self, name: str | None, port: int) -> bool:
        """Whether a client under ``name`` may open ``port``: only its owner may open a reserved one."""
        owner = self.reservations.owner(port)
        return owner is None or owner == name


def read_clients(path: str) -> tuple[NamedClient, ...]:
    """The named clients in the JSON file at ``path``; a RosterError names the file and the client."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except OSError as e:
        raise RosterError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise RosterError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise RosterError(f"{path} line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(document, dict):
        raise RosterError(f'{path}: must hold a JSON object of clients, like {{"alice": {{"secret": "..."}}}}')
    if not document:
        raise RosterError(f"{path} names no client")
    return tuple(_client(path, name, entry) for name, entry in document.items())


def _client(path: str, name: str, entry: object) -> NamedClient:
    if not NAME.match(name):
        raise RosterError(
            f"{path}: client name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-', "
            "beginning with a letter or digit"
        )
    where = f"{path}: {name}"
    if not isinstance(entry, dict):
        raise RosterError(f'{where} must be an object like {{"secret": "...", "ports": [20345]}}')
    unknown = sorted(set(entry) - CLIENT_KEYS)
    if unknown:
        raise RosterError(f"{where}: unknown key {unknown[0]!r} (a client has a \"secret\" and may have \"ports\")")
    secret = entry.get("secret")
    if not isinstance(secret, str) or not secret.strip():
        raise RosterError(f"{where} needs a \"secret\": a non-empty string")
    ports = entry.get("ports", [])
    try:
        ranges = tuple(parse_ports(item) for item in (ports if isinstance(ports, list) else [ports]))
    except ValueError as e:
        raise RosterError(f"{where}: ports: {e}") from None
    return NamedClient(name, secret, ranges)
