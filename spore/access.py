"""Which source addresses may connect: the rules of ``--allow`` and ``--deny``.

The most specific entry that matches an address decides (the longest prefix;
between an allow and a deny entry of the same length, deny).  An address that
no entry matches is admitted unless some allow entry is given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

Network = IPv4Network | IPv6Network

_MAPPED = ip_network("::ffff:0:0/96")


def normalize(host: str) -> IPv4Address | IPv6Address | None:
    """The address a peer's ``host`` names, as the rules see it.

    An IPv4 client on a dual-stack listener shows up as ``::ffff:a.b.c.d``:
    it is matched as the IPv4 address it is.  None when ``host`` is not an IP
    address at all (a UNIX socket's path, say).
    """
    try:
        address = ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_key(address: object) -> str | None:
    """How a peer's address (anything with a ``host``) is counted and looked up:
    its normalized IP, so that ::ffff:127.0.0.2 and 127.0.0.2 are one peer;
    None when it has no IP address."""
    host = getattr(address, "host", None)
    ip = normalize(host) if host is not None else None
    return None if ip is None else str(ip)


SOURCE_PREFIX_V6 = 64
"""An IPv6 source is its /64: a single host is commonly given a whole /64, so its
addresses are as cheap to it as ports."""


def source_key(address: object) -> str | None:
    """Who a peer counts as when slots are shared out fairly: its IPv4 address, or
    its IPv6 /64 network; None when it has no IP address."""
    host = getattr(address, "host", None)
    if host is not None and host[:1].isdigit() and ":" not in host:
        return host  # IPv4, as the kernel writes it: already its own key (the cheap path for floods)
    ip = normalize(host) if host is not None else None
    if ip is None:
        return None
    if ip.version == 6:
        return str(ip_network((ip, SOURCE_PREFIX_V6), strict=False))
    return str(ip)


def parse_networks(spec: str | Sequence[str] | None, option: str) -> tuple[Network, ...]:
    """Parse an option's comma- or space-separated addresses and networks.

    ``spec`` is the command line's string or a config file's string or list
    of strings.  Host bits are forgiven (``10.0.0.1/8`` is ``10.0.0.0/8``).
    """
    if spec is None:
        return ()
    items = [spec] if isinstance(spec, str) else list(spec)
    networks = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{option}: {item!r} is not an IP address or network")
        for entry in re.split(r"[\s,]+", item.strip()):
            if entry:
                networks.append(_parse_network(entry, option))
    return tuple(networks)


def _parse_network(entry: str, option: str) -> Network:
    try:
        network = ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(f"{option}: {entry!r} is not an IP address or network") from None
    if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        # Clients are matched as IPv4, so an entry written as IPv4-mapped must be too.
        network = ip_network((network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network


@dataclass(frozen=True)
class AccessRules:
    """The allow and deny lists that decide who may connect."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, allow: str | Sequence[str] | None, deny: str | Sequence[str] | None) -> AccessRules:
        """Rules from the options' values; ValueError names a bad entry."""
        return cls(parse_networks(allow, "--allow"), parse_networks(deny, "--deny"))

    @property
    def restricts(self) -> bool:
        """Whether any rule is given (without one, everybody is admitted)."""
        return bool(self.allow or self.deny)

    def admits(self, host: str) -> bool:
        """Whether a peer at ``host`` may connect."""
        address = normalize(host)
        if address is None:  # not an IP peer, so a local one
            return True
        allowed, denied = _longest_match(self.allow, address), _longest_match(self.deny, address)
        if allowed < 0 and denied < 0:
            return not self.allow
        return allowed > denied


def _longest_match(networks: tuple[Network, ...], address: IPv4Address | IPv6Address) -> int:
    # -1 when nothing matches, so that even a /0 entry beats no entry.
    return max((network.prefixlen for network in networks if address in network), default=-1)
