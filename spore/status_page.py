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

The snapshot is a dict the server makes on each request; its JSON reads::

    {
      "server": {"version": "0.1.0", "started": "2026-12-02T10:00:00Z", "now": "2026-12-02T10:05:00Z",
                 "tunnels": 2, "visitors_forwarding": 3, "visitors_pending": 0, "visitors_total": 120,
                 "bytes_from_visitors": 12345, "bytes_to_visitors": 67890},
      "tunnels": [
        {"name": "alice", "client": "203.0.113.7:51234", "port": 20345, "opened": "2026-12-02T10:01:00Z",
         "open_seconds": 240.0, "visitors_forwarding": 1, "visitors_pending": 0, "visitors_total": 17,
         "bytes_from_visitors": 1234, "bytes_to_visitors": 5678},
        {"name": null, "client": "[2001:db8::1]:40000", "port": 20346, ...}
      ]
    }

``started``, ``now`` and ``opened`` are UTC times in ISO 8601.  ``name`` is
null for a tunnel opened with an unnamed secret, or on a server without
secrets: the page shows the client's address instead.  Tunnels come sorted by
port.  The page and its script ignore keys they do not know, so later versions
may add some.

It shows who is connected from where, so it is served only when asked for
(see ``spore.status_site`` for passwords and the loopback Host check).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource

from spore.metrics import MetricsPage

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


# The script and the style sheet live here rather than in files of their own,
# so that they ship with the package without package-data settings.

STATUS_JS = r"""/* Spore status: refreshes the totals and the tunnels every 2 s from api/tunnels. */
"use strict";
(function () {
  var PERIOD = 2000;
  var UNITS = ["kB", "MB", "GB", "TB", "PB", "EB"];
  var COLUMNS = [
    ["Tunnel", "tunnel"], ["Port", "num port"], ["Open for", "num"], ["Forwarding", "num"],
    ["Pending", "num"], ["Visitors", "num"], ["From visitors", "num"], ["To visitors", "num"]
  ];
  var rows = document.getElementById("tunnels");
  var updated = document.getElementById("updated");
  var lost = document.getElementById("lost");
  var timer = null;

  // A whole, non-negative number from a snapshot value, as _count does on the server.
  function count(value) {
    if (typeof value !== "number" || !isFinite(value)) return 0;
    return Math.max(0, Math.floor(value));
  }

  // The same text as format_bytes on the server: powers of 1000, halves rounded up.
  function formatBytes(value) {
    var n = count(value), unit = 1;
    if (n < 1000) return n + " B";
    for (var i = 0; i < UNITS.length; i++) {
      unit *= 1000;
      var tenths = Math.floor((n * 10 + unit / 2) / unit);
      if (tenths < 1000) return Math.floor(tenths / 10) + "." + (tenths % 10) + " " + UNITS[i];
      var whole = Math.floor((n + unit / 2) / unit);
      if (whole < 1000 || i === UNITS.length - 1) return whole + " " + UNITS[i];
    }
  }

  function formatDuration(value) {
    var s = count(value);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }

  function text(value) {
    return value === null || value === undefined ? "" : String(value);
  }

  function element(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function row(tunnel) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-port", String(count(tunnel.port)));
    var client = text(tunnel.client);
    var who = [];
    if (tunnel.name === null || tunnel.name === undefined) {
      who.push(element("span", "name unnamed", client));
    } else {
      who.push(element("span", "name", text(tunnel.name)), document.createTextNode(" "),
               element("span", "client", client));
    }
    var opened = element("time", "", formatDuration(tunnel.open_seconds));
    opened.setAttribute("datetime", text(tunnel.opened));
    opened.setAttribute("title", text(tunnel.opened));
    var values = [
      who, String(count(tunnel.port)), [opened], String(count(tunnel.visitors_forwarding)),
      String(count(tunnel.visitors_pending)), String(count(tunnel.visitors_total)),
      formatBytes(tunnel.bytes_from_visitors), formatBytes(tunnel.bytes_to_visitors)
    ];
    for (var i = 0; i < COLUMNS.length; i++) {
      var td = element("td", COLUMNS[i][1]);
      td.setAttribute("data-label", COLUMNS[i][0]);
      if (typeof values[i] === "string") {
        td.textContent = values[i];
      } else {
        for (var j = 0; j < values[i].length; j++) td.appendChild(values[i][j]);
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function emptyRow() {
    var tr = element("tr", "empty");
    var td = element("td", "", "No tunnels open");
    td.setAttribute("colspan", String(COLUMNS.length));
    tr.appendChild(td);
    return tr;
  }

  function show(snapshot) {
    var server = snapshot.server || {};
    var totals = document.querySelectorAll("[data-total]");
    for (var i = 0; i < totals.length; i++) {
      var value = server[totals[i].getAttribute("data-total")];
      var bytes = totals[i].getAttribute("data-format") === "bytes";
      totals[i].textContent = bytes ? formatBytes(value) : String(count(value));
    }
    var tunnels = (Array.isArray(snapshot.tunnels) ? snapshot.tunnels : []).slice();
    tunnels.sort(function (a, b) { return count(a.port) - count(b.port); });
    var fresh = document.createDocumentFragment();
    for (var k = 0; k < tunnels.length; k++) fresh.appendChild(row(tunnels[k]));
    if (!tunnels.length) fresh.appendChild(emptyRow());
    while (rows.firstChild) rows.removeChild(rows.firstChild);
    rows.appendChild(fresh);
    document.getElementById("version").textContent = text(server.version);
    var uptime = document.getElementById("uptime");
    var up = (Date.parse(server.now) - Date.parse(server.started)) / 1000;
    uptime.textContent = isFinite(up) ? formatDuration(up) : "?";
    uptime.setAttribute("datetime", text(server.started));
    uptime.setAttribute("title", "since " + text(server.started));
  }

  function two(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function refresh() {
    timer = null;
    if (document.hidden) return;
    fetch("api/tunnels", {cache: "no-store", credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (snapshot) {
        show(snapshot);
        var now = new Date();
        updated.textContent = "updated " + [now.getHours(), now.getMinutes(), now.getSeconds()].map(two).join(":");
        lost.hidden = true;
      })
      .catch(function (error) {
        lost.title = String(error);
        lost.hidden = false;
      })
      .then(function () { timer = setTimeout(refresh, PERIOD); });
  }

  // A hidden tab does not poll; it catches up when it is shown again.
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null) refresh();
  });
  refresh();
})();
"""

STATUS_CSS = r"""/* Spore status: a table on wide screens, one card per tunnel on narrow ones. */
:root {
  color-scheme: light dark;
  --bg: #f6f7f9; --fg: #1c2330; --muted: #5d6778; --card: #fff; --line: #dde1e8; --accent: #2a6f4f;
  --warn-bg: #fff1e0; --warn-fg: #8a4300;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171c; --fg: #e4e8ee; --muted: #99a3b3; --card: #1d2128; --line: #2e343e; --accent: #6fcf9d;
    --warn-bg: #3a2812; --warn-fg: #ffc27a;
  }
}
[hidden] { display: none !important; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body {
  margin: 0 auto; max-width: 72rem; padding: 1rem 1.25rem 2rem;
  background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif;
}
header { display: flex; flex-wrap: wrap; align-items: baseline; justify-content: space-between; gap: .25rem 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; letter-spacing: .01em; }
.muted, .meta, footer { color: var(--muted); }
.meta { margin: 0 0 .5rem; font-size: .9rem; font-variant-numeric: tabular-nums; }
.lost {
  display: inline-block; margin-left: .5rem; padding: .1rem .5rem; border-radius: 999px;
  background: var(--warn-bg); color: var(--warn-fg); font-weight: 600;
}
.totals {
  display: grid; grid-template-columns: repeat(auto-fit, minmax(8.5rem, 1fr)); gap: .6rem; margin: .5rem 0 1.25rem;
}
.stat {
  background: var(--card); border: 1px solid var(--line); border-radius: .6rem; padding: .6rem .8rem;
  display: flex; flex-direction: column;
}
.stat .label { color: var(--muted); font-size: .8rem; }
.stat .value { font-size: 1.35rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.table { overflow-x: auto; background: var(--card); border: 1px solid var(--line); border-radius: .6rem; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .55rem .75rem; text-align: left; white-space: nowrap; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-size: .8rem; font-weight: 600; }
tbody tr:last-child td { border-bottom: 0; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.tunnel { white-space: normal; overflow-wrap: break-word; min-width: 12rem; }
/* Each wraps as a whole before either breaks. */
.name, .client { display: inline-block; max-width: 100%; }
.name { font-weight: 600; margin-right: .4rem; }
.client { color: var(--muted); font-size: .85rem; }
.unnamed {
  font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: .9rem;
}
time[title] { text-decoration: underline dotted var(--muted); text-underline-offset: .2em; }
tr.empty td { text-align: center; color: var(--muted); padding: 1.5rem; }
footer { margin-top: 1rem; font-size: .85rem; }
@media (max-width: 600px) {
  body { padding: .75rem .75rem 1.5rem; }
  .totals { grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .45rem; }
  .stat { padding: .45rem .6rem; }
  .stat .value { font-size: 1.1rem; }
  .table { overflow: visible; background: none; border: 0; border-radius: 0; }
  table, thead, tbody, tr, td { display: block; }
  thead { display: none; }
  tbody tr {
    display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .5rem 0;
    background: var(--card); border: 1px solid var(--line); border-radius: .6rem;
    margin-bottom: .6rem; padding: .6rem .8rem .7rem;
  }
  td {
    display: flex; flex-direction: column; align-items: flex-start;
    padding: 0 .5rem 0 0; border: 0; text-align: left; white-space: normal;
  }
  td::before { content: attr(data-label); color: var(--muted); font-size: .75rem; }
  /* The card's head: the tunnel, and its port on the right. */
  td.tunnel, td.port { grid-row: 1; padding-bottom: .5rem; border-bottom: 1px solid var(--line); }
  td.tunnel { grid-column: 1 / 3; display: block; }
  td.tunnel::before { content: none; }
  td.port { grid-column: 3; align-items: flex-end; padding-right: 0; font-weight: 600; }
  td.port::before { font-weight: normal; }
  .client { display: block; }
  tr.empty { display: block; padding: 0; }
  tr.empty td { display: block; text-align: center; }
  tr.empty td::before { content: none; }
}
"""
