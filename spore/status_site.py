"""The status page's Site: a password guard, a loopback Host check, and where it may listen.

The page shows who is connected from where.  On a loopback address the
operator's own machine is the only one that can reach it, but a web page the
operator visits can: a name it controls, re-pointed at 127.0.0.1 (DNS
rebinding), makes the browser send the page's requests there with that name
in the Host header.  So on loopback only loopback names are answered.
Beyond loopback it takes a password from a password file (see
``spore.passwords``), over TLS so the password does not cross a network in
clear; :func:`endpoint_problem` says when a listening description breaks
that rule.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from twisted.cred.portal import IRealm, Portal
from twisted.internet.endpoints import _parse
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site
from zope.interface import implementer

from spore.passwords import PasswordFileChecker
from spore.status_page import set_common_headers, status_resource

REALM = b"Spore status"

_PORT = re.compile(r":\d*")
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")

# Where each endpoint type's positional arguments put the interface, counting the type itself.
_INTERFACE_POSITION = {"tcp": 2, "tcp6": 3, "ssl": 5, "tls": 4}
_TLS_TYPES = {"ssl", "tls"}


class StatusSite(Site):
    """A Site that does not log: a page refreshing every 2 seconds is not worth a line each time."""

    noisy = False
    passwords: PasswordFileChecker | None = None  # who may see it, if a password file says

    def log(self, request) -> None:
        pass


@implementer(IRealm)
class StatusRealm:
    """Gives every user who logs in the same status tree."""

    def __init__(self, resource: IResource) -> None:
        self.resource = resource

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IResource in interfaces:
            return IResource, self.resource, lambda: None
        raise NotImplementedError("the status page has only web resources")


def _is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_loopback_host(host: bytes | None) -> bool:
    """Whether a Host header names this machine's loopback: ``localhost``, ``*.localhost``, 127/8 or ``[::1]``.

    A port may follow.  No header at all is not loopback: every browser sends one.
    """
    if not host:
        return False
    try:
        text = host.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return False
    if text.startswith("["):
        address, bracket, port = text[1:].partition("]")
        if not bracket or (port and not _PORT.fullmatch(port)):
            return False
        return isinstance(_address_or_none(address), ipaddress.IPv6Address) and _is_loopback_address(address)
    if text.count(":") > 1:  # a bare IPv6 address, which clients should bracket
        return _is_loopback_address(text)
    name, _, port = text.partition(":")
    if port and not port.isdigit():
        return False
    name = name.removesuffix(".")
    if name == "localhost" or (name.endswith(".localhost") and _NAME.fullmatch(name)):
        return True
    return isinstance(_address_or_none(name), ipaddress.IPv4Address) and _is_loopback_address(name)


def _address_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class _Misdirected(Resource):
    """The answer to a request whose Host is not a loopback name."""

    isLeaf = True

    def __init__(self, hosts: list[bytes] | None) -> None:
        super().__init__()
        self.hosts = hosts

    def render(self, request) -> bytes:
        if not self.hosts:
            why = "this request has no Host header"
        elif len(self.hosts) > 1:
            why = "this request has more than one Host header"
        else:
            shown = self.hosts[0][:100].decode("ascii", "backslashreplace")
            why = f"this request is for {shown!r}"
        request.setResponseCode(421, b"Misdirected Request")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return (
            "421 Misdirected Request: on a loopback address the Spore status page answers only requests"
            f" for localhost or a loopback address (so other sites cannot reach it by DNS rebinding), and {why}.\n"
        ).encode()


@implementer(IResource)
class _Front:
    """The outermost resource: the common headers on every answer, then the Host check if asked for."""

    isLeaf = False

    def __init__(self, wrapped: IResource, loopback: bool) -> None:
        self.wrapped = wrapped
        self.loopback = loopback

    def _refusal(self, request) -> IResource | None:
        set_common_headers(request)
        if not self.loopback:
            return None
        hosts = request.requestHeaders.getRawHeaders(b"host")
        if hosts and len(hosts) == 1 and is_loopback_host(hosts[0]):
            return None
        return _Misdirected(hosts)

    def getChildWithDefault(self, path: bytes, request) -> IResource:
        refusal = self._refusal(request)
        return refusal if refusal is not None else self.wrapped.getChildWithDefault(path, request)

    def render(self, request):
        refusal = self._refusal(request)
        return (refusal if refusal is not None else self.wrapped).render(request)

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError()


def status_site(
    snapshot: Callable[[], dict],
    registry: CollectorRegistry,
    *,
    passwords: str | None = None,
    loopback: bool = False,
    reactor=None,
) -> Site:
    """The status page's Site, behind a password file's users if ``passwords`` is a path.

    With ``loopback``, requests whose Host is not a loopback name are refused
    (421) before any password is asked for.  ``reactor``, if given, checks
    passwords in its thread pool rather than in the reactor's thread.  Raises
    ``spore.passwords.PasswordFileError`` for a password file that cannot be used.
    """
    resource = status_resource(snapshot, registry)
    checker = None
    if passwords is not None:
        checker = PasswordFileChecker(passwords, reactor=reactor)
        resource = HTTPAuthSessionWrapper(Portal(StatusRealm(resource), [checker]), [BasicCredentialFactory(REALM)])
    site = StatusSite(_Front(resource, loopback))
    site.passwords = checker
    return site


def _endpoint_parts(description: str) -> tuple[str, str | None]:
    """An endpoint description's type and interface, split as serverFromString splits it.

    Twisted's private ``_parse`` is what ``serverFromString`` uses, so escapes
    (``tcp6:0:interface=\\:\\:1``) mean here what they mean there.
    """
    args, kwargs = _parse(description)
    kind = args[0].lower() if args else ""
    position = _INTERFACE_POSITION.get(kind)
    if "interface" in kwargs:
        return kind, kwargs["interface"]
    if position is not None and len(args) > position:
        return kind, args[position]
    return kind, None


def is_loopback_endpoint(description: str) -> bool | None:
    """Whether a server endpoint description listens on loopback only; None if its type is not known here.

    True for ``unix:`` and for ``tcp:``, ``tcp6:``, ``ssl:`` or ``tls:`` with a
    loopback ``interface=`` (127.0.0.0/8, ``::1``, ``localhost``); False for
    those without an interface (every address) or with another one.
    """
    kind, interface = _endpoint_parts(description)
    if kind == "unix":
        return True
    if kind not in _INTERFACE_POSITION:
        return None
    if interface is None:
        return False
    interface = interface.strip().lower()
    return interface == "localhost" or _is_loopback_address(interface.strip("[]"))


def uses_tls(description: str) -> bool:
    """Whether a server endpoint description listens with TLS (``ssl:``, or Twisted's ``tls:``)."""
    return _endpoint_parts(description)[0] in _TLS_TYPES


def endpoint_problem(description: str, passwords: str | None) -> str | None:
    """Why the status page may not listen on ``description`` with these passwords, or None if it may.

    Beyond loopback it needs a password file and TLS; a type of endpoint not
    known here counts as beyond loopback.
    """
    if is_loopback_endpoint(description):
        return None
    if passwords is None:
        return (
            f"the status page on {description!r} would be reachable beyond this machine:"
            " give it a password file (and TLS), or listen on loopback (interface=127.0.0.1)"
        )
    if not uses_tls(description):
        return (
            f"the status page on {description!r} would take passwords in clear beyond this machine:"
            " listen with ssl:...:privateKey=KEY:certKey=CERT, or on loopback (interface=127.0.0.1)"
        )
    return None
