"""The server's live status page: every open tunnel and the totals, as HTML and as JSON.

:func:`status_resource` is the root of a twisted.web tree:

``/``
    the page, rendered here from a snapshot, so it is complete without
    JavaScript; ``status.js`` then refreshes it every 2 seconds.
``/status.js``, ``/status.css``
    the script and the style sheet (nothing inline: the page's
    Content-Security-Policy allows only its own files).
``/api/tunnels``
    the snapshot as JSON, for the script and for other scripts.
``/metrics``
    the Prometheus numbers, as ``spore.metrics.MetricsPage`` serves them.

The snapshot is a dict the server makes on each request, shaped as
``spore.status_report`` documents.  The page and its script ignore keys they
do not know, so later versions may add some; a tunnel whose ``name`` is null
shows its client's address.

It shows who is connected from where, so it is served only when asked for
(see ``spore.status_site`` for passwords and the loopback Host check).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from datetime import datetime
from importlib.resources import files
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource

from spore.metrics import MetricsPage

# The page's script and style sheet, shipped as files beside this module.
STATUS_JS = files("spore").joinpath("web/status.js").read_text(encoding="utf-8")
STATUS_CSS = files("spore").joinpath("web/status.css").read_text(encoding="utf-8")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {
    b"Cache-Control": b"no-store",
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
}

_BYTE_UNITS = ("kB", "MB", "GB", "TB", "PB", "EB")

# The columns of the table, as (heading, class) pairs; status.js builds the same cells.
_COLUMNS = (
    ("Tunnel", "tunnel"),
    ("Port", "num port"),
    ("Open for", "num"),
    ("Forwarding", "num"),
    ("Pending", "num"),
    ("Visitors", "num"),
    ("From visitors", "num"),
    ("To visitors", "num"),
)

# The totals above the table, as (label, key in "server", format).
_TOTALS = (
    ("Tunnels", "tunnels", "count"),
    ("Forwarding", "visitors_forwarding", "count"),
    ("Pending", "visitors_pending", "count"),
    ("Visitors", "visitors_total", "count"),
    ("From visitors", "bytes_from_visitors", "bytes"),
    ("To visitors", "bytes_to_visitors", "bytes"),
)


def set_common_headers(request) -> None:
    """The headers every response of the status site carries, error pages included."""
    for name, value in _HEADERS.items():
        request.setHeader(name, value)


def format_bytes(count: object) -> str:
    """``count`` bytes for a person: ``"999 B"``, ``"1.2 kB"``, ``"12.3 MB"``, ``"123 GB"`` (powers of 1000).

    Integer arithmetic, rounding halves up, so that status.js gives the same text.
    """
    n = _count(count)
    if n < 1000:
        return f"{n} B"
    unit = 1
    for name in _BYTE_UNITS:
        unit *= 1000
        tenths = (n * 10 + unit // 2) // unit
        if tenths < 1000:
            return f"{tenths // 10}.{tenths % 10} {name}"
        whole = (n + unit // 2) // unit
        if whole < 1000 or name == _BYTE_UNITS[-1]:
            return f"{whole} {name}"
    raise AssertionError("unreachable")


def format_duration(seconds: object) -> str:
    """A duration for a person: ``"42 s"``, ``"4 min"``, ``"3 h 7 min"``, ``"2 d 5 h"``."""
    s = _count(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _count(value: object) -> int:
    """A whole, non-negative number from a snapshot value, 0 for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, math.floor(value))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _seconds_between(start: object, end: object) -> float | None:
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return None


def _clock(iso: object) -> str:
    try:
        return datetime.fromisoformat(str(iso)).strftime("%H:%M:%S UTC")
    except ValueError:
        return ""


def _row(tunnel: dict[str, Any]) -> str:
    e = html.escape
    client = _text(tunnel.get("client"))
    name = tunnel.get("name")
    if name is None:
        who = f'<span class="name unnamed">{e(client)}</span>'
    else:
        who = f'<span class="name">{e(_text(name))}</span> <span class="client">{e(client)}</span>'
    opened = _text(tunnel.get("opened"))
    values = (
        who,
        e(str(_count(tunnel.get("port")))),
        f'<time datetime="{e(opened)}" title="{e(opened)}">{e(format_duration(tunnel.get("open_seconds")))}</time>',
        str(_count(tunnel.get("visitors_forwarding"))),
        str(_count(tunnel.get("visitors_pending"))),
        str(_count(tunnel.get("visitors_total"))),
        e(format_bytes(tunnel.get("bytes_from_visitors"))),
        e(format_bytes(tunnel.get("bytes_to_visitors"))),
    )
    cells = "".join(
        f'<td class="{cls}" data-label="{e(label)}">{value}</td>' for (label, cls), value in zip(_COLUMNS, values)
    )
    return f'<tr data-port="{_count(tunnel.get("port"))}">{cells}</tr>'


def _empty_row() -> str:
    return f'<tr class="empty"><td colspan="{len(_COLUMNS)}">No tunnels open</td></tr>'


def render_page(snapshot: dict[str, Any]) -> str:
    """The whole status page for one snapshot, every value escaped."""
    e = html.escape
    server = snapshot.get("server") or {}
    tunnels = sorted(snapshot.get("tunnels") or [], key=lambda t: _count(t.get("port")))
    totals = "".join(
        f'<div class="stat"><span class="label">{e(label)}</span>'
        f'<span class="value" data-total="{key}" data-format="{kind}">'
        f"{e(format_bytes(server.get(key)) if kind == 'bytes' else str(_count(server.get(key))))}</span></div>"
        for label, key, kind in _TOTALS
    )
    headings = "".join(f'<th scope="col" class="{cls}">{e(label)}</th>' for label, cls in _COLUMNS)
    rows = "".join(_row(t) for t in tunnels) or _empty_row()
    up = _seconds_between(server.get("started"), server.get("now"))
    started = _text(server.get("started"))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Spore status</title>
<link rel="stylesheet" href="status.css">
<script src="status.js" defer></script>
<noscript><meta http-equiv="refresh" content="5"></noscript>
</head>
<body>
<header>
<h1>Spore <span class="muted">status</span></h1>
<p class="meta"><span id="updated">updated {e(_clock(server.get("now")))}</span>
<span id="lost" class="lost" role="status" hidden>connection lost, retrying</span></p>
</header>
<main>
<section class="totals" aria-label="Totals">{totals}</section>
<div class="table">
<table>
<thead><tr>{headings}</tr></thead>
<tbody id="tunnels">{rows}</tbody>
</table>
</div>
</main>
<footer>Spore <span id="version">{e(_text(server.get("version")))}</span>
· up <time id="uptime" datetime="{e(started)}" title="since {e(started)}">{
        e(format_duration(up)) if up is not None else "?"}</time></footer>
</body>
</html>
"""


class _Folder(Resource):
    """A resource with no page of its own (a 404), whose unknown children are 404s too."""

    def getChild(self, path: bytes, request) -> IResource:
        return notFound()

    def render_GET(self, request) -> bytes:
        return notFound().render(request)


class _Root(_Folder):
    """The status tree's root, which gives every response the common headers."""

    def getChildWithDefault(self, path: bytes, request) -> IResource:
        set_common_headers(request)
        return super().getChildWithDefault(path, request)


class _Page(_Folder):
    """The HTML page, rendered from a fresh snapshot on each request."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        super().__init__()
        self.snapshot = snapshot

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode())
        return render_page(self.snapshot()).encode("utf-8")


class _Tunnels(_Folder):
    """``/api/tunnels``: the snapshot as JSON."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        super().__init__()
        self.snapshot = snapshot

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self.snapshot(), separators=(",", ":")).encode("ascii")


class _File(_Folder):
    """A file of the page held in memory."""

    def __init__(self, content: str, content_type: bytes) -> None:
        super().__init__()
        self.content = content.encode("utf-8")
        self.content_type = content_type

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", self.content_type)
        return self.content


def status_resource(snapshot: Callable[[], dict], registry: CollectorRegistry) -> IResource:
    """The status page's resource tree, for a Site or a guard to serve (see the module docstring)."""
    root = _Root()
    root.putChild(b"", _Page(snapshot))
    root.putChild(b"status.js", _File(STATUS_JS, b"text/javascript; charset=utf-8"))
    root.putChild(b"status.css", _File(STATUS_CSS, b"text/css; charset=utf-8"))
    api = _Folder()
    api.putChild(b"tunnels", _Tunnels(snapshot))
    root.putChild(b"api", api)
    root.putChild(b"metrics", MetricsPage(registry))
    return root

