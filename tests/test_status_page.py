"""The status page: what it renders, what it answers over real sockets, and what a real browser shows."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry, Counter
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.pages import errorPage

from spore.passwords import hash_password
from spore.status_page import CONTENT_SECURITY_POLICY, format_bytes, format_duration, render_page, status_resource
from spore.status_site import (
    StatusSite,
    endpoint_problem,
    is_loopback_endpoint,
    is_loopback_host,
    status_site,
    uses_tls,
)
from tests.browser import chromium_missing_reason, render, render_async
from tests.certs import PKI

TIMEOUT = 5
LOOPBACK = "tcp:0:interface=127.0.0.1"

SNAPSHOT = {
    "server": {
        "version": "0.1.0", "started": "2026-12-02T10:00:00Z", "now": "2026-12-02T10:05:00Z",
        "tunnels": 2, "visitors_forwarding": 3, "visitors_pending": 0, "visitors_total": 120,
        "bytes_from_visitors": 12345, "bytes_to_visitors": 67890, "a_key_from_later": [1, 2],
    },
    "tunnels": [
        {
            "name": "alice", "client": "203.0.113.7:51234", "port": 20345, "opened": "2026-12-02T10:01:00Z",
            "open_seconds": 240.0, "visitors_forwarding": 1, "visitors_pending": 0, "visitors_total": 17,
            "bytes_from_visitors": 1234, "bytes_to_visitors": 5678, "warm": 2,
        },
        {
            "name": None, "client": "[2001:db8::1]:40000", "port": 20346, "opened": "2026-12-02T08:59:30Z",
            "open_seconds": 3930.5, "visitors_forwarding": 2, "visitors_pending": 1, "visitors_total": 103,
            "bytes_from_visitors": 11111, "bytes_to_visitors": 62212000, "warm": 0,
        },
    ],
}

EMPTY = {"server": {**SNAPSHOT["server"], "tunnels": 0, "visitors_forwarding": 0}, "tunnels": []}
HOSTILE = '<script>alert("hi")</script>'
COMMON_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


# What a page shows, read back with html.parser.


class _Reader(HTMLParser):
    """The rows of the tunnels table and the text of elements with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.titles: dict[str, list[str | None]] = {}
        self.by_id: dict[str, dict] = {}
        self.tags: list[tuple[str, dict]] = []
        self.totals: dict[str, str] = {}
        self.empty = False
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._texts: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and "data-port" in attrs:
            self._row = attrs["data-port"]
            self.rows[self._row], self.titles[self._row] = [], []
        elif tag == "tr" and attrs.get("class") == "empty":
            self.empty = True
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "time" and self._row is not None:
            self.titles[self._row].append(attrs.get("title"))
        if "id" in attrs:
            self.by_id[attrs["id"]] = {"attrs": attrs, "text": []}
            self._texts.append((tag, self.by_id[attrs["id"]]["text"]))
        if "data-total" in attrs:
            self._texts.append((tag, self.totals.setdefault(attrs["data-total"], [])))

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row is not None:
            self.rows[self._row].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None
        if self._texts and self._texts[-1][0] == tag:
            self._texts.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        for _, texts in self._texts:
            texts.append(data)

    def text_of(self, element_id: str) -> str:
        return " ".join("".join(self.by_id[element_id]["text"]).split())

    def total(self, key: str) -> str:
        return "".join(self.totals[key]).strip()


def read(page: str) -> _Reader:
    reader = _Reader()
    reader.feed(page)
    reader.close()
    return reader


def expected_row(tunnel: dict) -> list[str]:
    who = tunnel["client"] if tunnel["name"] is None else f"{tunnel['name']} {tunnel['client']}"
    return [
        who, str(tunnel["port"]), format_duration(tunnel["open_seconds"]),
        str(tunnel["visitors_forwarding"]), str(tunnel["visitors_pending"]), str(tunnel["visitors_total"]),
        format_bytes(tunnel["bytes_from_visitors"]), format_bytes(tunnel["bytes_to_visitors"]),
    ]


# The page, rendered.


def test_the_page_has_a_row_per_tunnel_with_its_values():
    page = read(render_page(SNAPSHOT))
    assert list(page.rows) == ["20345", "20346"]
    assert page.rows["20345"] == ["alice 203.0.113.7:51234", "20345", "4 min", "1", "0", "17", "1.2 kB", "5.7 kB"]
    assert page.rows["20346"] == ["[2001:db8::1]:40000", "20346", "1 h 5 min", "2", "1", "103", "11.1 kB", "62.2 MB"]
    assert page.titles == {"20345": ["2026-12-02T10:01:00Z"], "20346": ["2026-12-02T08:59:30Z"]}
    assert not page.empty


def test_the_page_shows_the_totals_and_reads_on_a_phone():
    text = render_page(SNAPSHOT)
    page = read(text)
    assert {key: page.total(key) for key in page.totals} == {
        "tunnels": "2", "visitors_forwarding": "3", "visitors_pending": "0", "visitors_total": "120",
        "bytes_from_visitors": "12.3 kB", "bytes_to_visitors": "67.9 kB",
    }
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in page.tags
    assert ("meta", {"http-equiv": "refresh", "content": "5"}) in page.tags  # in <noscript>
    assert page.text_of("updated") == "updated 10:05:00 UTC"
    assert page.text_of("uptime") == "5 min" and page.text_of("version") == "0.1.0"
    assert "hidden" in page.by_id["lost"]["attrs"]
    # Nothing inline for the Content-Security-Policy to refuse.
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"src": "status.js", "defer": None}]
    assert not [attrs for _, attrs in page.tags if "style" in attrs or any(a.startswith("on") for a in attrs)]
    assert "<style" not in text


def test_tunnels_come_in_port_order():
    shuffled = {**SNAPSHOT, "tunnels": list(reversed(SNAPSHOT["tunnels"]))}
    assert list(read(render_page(shuffled)).rows) == ["20345", "20346"]


def test_the_page_says_when_no_tunnel_is_open():
    page = read(render_page(EMPTY))
    assert page.rows == {} and page.empty
    assert "No tunnels open" in render_page(EMPTY)


def test_every_value_is_escaped():
    hostile = copy.deepcopy(SNAPSHOT)
    hostile["tunnels"][0]["name"] = HOSTILE
    hostile["tunnels"][0]["client"] = '"><img src=x onerror=alert(1)>'
    hostile["tunnels"][0]["opened"] = '" onmouseover="alert(1)'
    hostile["server"]["version"] = "<b>9</b>"
    text = render_page(hostile)
    page = read(text)
    assert HOSTILE not in text and "<img" not in text and "<b>" not in text
    assert page.rows["20345"][0] == f'{HOSTILE} "><img src=x onerror=alert(1)>'
    assert page.titles["20345"] == ['" onmouseover="alert(1)']
    assert [tag for tag, _ in page.tags].count("script") == 1 and not any("onmouseover" in a for _, a in page.tags)


def test_missing_or_odd_values_do_not_break_the_page():
    odd = {"server": {"tunnels": "many"}, "tunnels": [{"port": 20000, "name": "x", "open_seconds": None}]}
    page = read(render_page(odd))
    assert page.rows["20000"] == ["x", "20000", "0 s", "0", "0", "0", "0 B", "0 B"]
    assert page.total("tunnels") == "0" and page.text_of("uptime") == "?"


@pytest.mark.parametrize(
    "count, text",
    [
        (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1234, "1.2 kB"), (1250, "1.3 kB"), (12345, "12.3 kB"),
        (99949, "99.9 kB"), (99950, "100 kB"), (123456, "123 kB"), (999499, "999 kB"), (999500, "1.0 MB"),
        (1_200_000, "1.2 MB"), (62_212_000, "62.2 MB"), (5 * 10**12, "5.0 TB"), (10**21, "1000 EB"),
        (-5, "0 B"), (None, "0 B"), (True, "0 B"), (float("nan"), "0 B"), (12.9, "12 B"),
    ],
)
def test_byte_counts_read_like_a_person_would_write_them(count, text):
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0 s"), (59.9, "59 s"), (60, "1 min"), (240.0, "4 min"), (3599, "59 min"), (3600, "1 h 0 min"),
     (3930.5, "1 h 5 min"), (86399, "23 h 59 min"), (86400, "1 d 0 h"), (200000, "2 d 7 h"), (-3, "0 s")],
)
def test_durations_read_like_a_person_would_write_them(seconds, text):
    assert format_duration(seconds) == text


def test_the_script_sets_text_never_markup():
    from spore.status_page import STATUS_JS

    assert "innerHTML" not in STATUS_JS and "insertAdjacentHTML" not in STATUS_JS and "eval(" not in STATUS_JS
    assert 'fetch("api/tunnels"' in STATUS_JS  # relative: works under a path prefix
    assert "connection lost, retrying" in render_page(SNAPSHOT)


# The site over real loopback sockets.


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


class _Exchange(Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.done.callback(self.received)


async def fetch(
    reactor, port: int, path: str = "/", *, host: str | None = "", auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None, tls: PKI | None = None, method: str = "GET",
) -> Response:
    """One HTTP/1.0 request to 127.0.0.1:``port``; ``host=None`` sends no Host header at all."""
    lines = [f"{method} {path} HTTP/1.0"]
    if host is not None:
        lines.append(f"Host: {host or f'127.0.0.1:{port}'}")
    if auth is not None:
        lines.append("Authorization: Basic " + base64.b64encode(":".join(auth).encode()).decode())
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
    if tls is not None:
        trust = Certificate.loadPEM(Path(tls.ca).read_bytes())
        endpoint = wrapClientTLS(optionsForClientTLS("localhost", trustRoot=trust), endpoint)
    exchange = _Exchange(("\r\n".join(lines) + "\r\n\r\n").encode())
    await connectProtocol(endpoint, exchange).addTimeout(TIMEOUT, reactor)
    raw = await exchange.done.addTimeout(TIMEOUT, reactor)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("iso-8859-1").split("\r\n")
    found: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return Response(int(status_line.split()[1]), found, body)


@asynccontextmanager
async def serving(reactor, site: StatusSite, description: str = LOOPBACK):
    """Serve ``site`` on ``description`` for the length of the block; yields the port."""
    port = await serverFromString(reactor, description).listen(site).addTimeout(TIMEOUT, reactor)
    try:
        yield port.getHost().port
    finally:
        await port.stopListening()


def counted_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("spore_status_test", "A number to find on /metrics", registry=registry).inc(7)
    return registry


def assert_common_headers(response: Response) -> None:
    assert {name: response.header(name) for name in COMMON_HEADERS} == COMMON_HEADERS


@pytest.fixture(scope="module")
def password_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("passwords") / "status.passwords"
    path.write_text(f"# who may look\nalice:{hash_password('open sesame')}\n")
    return str(path)


@pytest_twisted.ensureDeferred
async def test_the_site_serves_the_page_the_json_and_the_files(reactor):
    async with serving(reactor, status_site(lambda: SNAPSHOT, counted_registry())) as port:
        page = await fetch(reactor, port, "/")
        assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"
        assert page.header("content-security-policy") == CONTENT_SECURITY_POLICY
        assert_common_headers(page)
        assert list(read(page.body.decode()).rows) == ["20345", "20346"]

        api = await fetch(reactor, port, "/api/tunnels")
        assert api.status == 200 and api.header("content-type") == "application/json"
        assert json.loads(api.body) == SNAPSHOT
        assert_common_headers(api)

        script = await fetch(reactor, port, "/status.js")
        assert script.status == 200 and script.header("content-type") == "text/javascript; charset=utf-8"
        assert b"api/tunnels" in script.body
        style = await fetch(reactor, port, "/status.css")
        assert style.status == 200 and style.header("content-type") == "text/css; charset=utf-8"
        assert b"@media (max-width: 600px)" in style.body
        for response in (script, style):
            assert_common_headers(response)

        metrics = await fetch(reactor, port, "/metrics")
        assert metrics.status == 200 and metrics.header("content-type").startswith("text/plain")
        assert b"spore_status_test_total 7.0" in metrics.body

        head = await fetch(reactor, port, "/api/tunnels", method="HEAD")
        assert head.status == 200 and head.body == b""


@pytest_twisted.ensureDeferred
async def test_the_json_follows_the_snapshot_of_the_moment(reactor):
    snapshots = iter([SNAPSHOT, EMPTY])
    async with serving(reactor, status_site(lambda: next(snapshots), CollectorRegistry())) as port:
        assert json.loads((await fetch(reactor, port, "/api/tunnels")).body) == SNAPSHOT
        empty = await fetch(reactor, port, "/")
        assert read(empty.body.decode()).empty


@pytest.mark.parametrize(
    "path", ["/nothing", "/api", "/api/", "/api/tunnels/20345", "/status.js/x", "//", "/index.html"]
)
@pytest_twisted.ensureDeferred
async def test_other_paths_are_not_found(reactor, path):
    async with serving(reactor, status_site(lambda: SNAPSHOT, CollectorRegistry())) as port:
        response = await fetch(reactor, port, path)
        assert response.status == 404
        assert_common_headers(response)


@pytest_twisted.ensureDeferred
async def test_a_password_file_guards_every_path(reactor, password_file):
    site = status_site(lambda: SNAPSHOT, counted_registry(), passwords=password_file)
    async with serving(reactor, site) as port:
        for path in ("/", "/api/tunnels", "/metrics", "/status.js", "/nothing"):
            refused = await fetch(reactor, port, path)
            assert refused.status == 401, path
            scheme, _, challenge = refused.header("www-authenticate").partition(" ")
            assert scheme.lower() == "basic" and challenge == 'realm="Spore status"'
            assert_common_headers(refused)
            assert SNAPSHOT["tunnels"][0]["client"].encode() not in refused.body

        for auth in (("alice", "open says me"), ("bob", "open sesame"), ("alice", "")):
            assert (await fetch(reactor, port, "/", auth=auth)).status == 401, auth
        garbled = await fetch(reactor, port, "/", headers={"Authorization": "Basic !!!not base64"})
        assert garbled.status == 401

        page = await fetch(reactor, port, "/", auth=("alice", "open sesame"))
        assert page.status == 200 and list(read(page.body.decode()).rows) == ["20345", "20346"]
        assert page.header("content-security-policy") == CONTENT_SECURITY_POLICY
        api = await fetch(reactor, port, "/api/tunnels", auth=("alice", "open sesame"))
        assert json.loads(api.body) == SNAPSHOT
        metrics = await fetch(reactor, port, "/metrics", auth=("alice", "open sesame"))
        assert b"spore_status_test_total 7.0" in metrics.body
        missing = await fetch(reactor, port, "/nothing", auth=("alice", "open sesame"))
        assert missing.status == 404


@pytest_twisted.ensureDeferred
async def test_passwords_can_be_checked_off_the_reactor_thread(reactor, password_file):
    site = status_site(lambda: SNAPSHOT, CollectorRegistry(), passwords=password_file, reactor=reactor)
    async with serving(reactor, site) as port:
        assert (await fetch(reactor, port, "/", auth=("alice", "wrong"))).status == 401
        assert (await fetch(reactor, port, "/", auth=("alice", "open sesame"))).status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io",
                                  "[::2]:{port}", "10.0.0.1", "", None])
@pytest_twisted.ensureDeferred
async def test_on_loopback_other_hosts_are_refused(reactor, host, password_file):
    for passwords in (None, password_file):
        site = status_site(lambda: SNAPSHOT, CollectorRegistry(), passwords=passwords, loopback=True)
        async with serving(reactor, site) as port:
            name = None if host is None else host.format(port=port) or " "
            for path in ("/", "/api/tunnels", "/metrics"):
                # Refused before the password is even asked for.
                response = await fetch(reactor, port, path, host=name, auth=("alice", "open sesame"))
                assert response.status == 421, (name, path)
                assert response.header("content-type") == "text/plain; charset=utf-8"
                assert b"Misdirected Request" in response.body and b"loopback" in response.body
                assert b"203.0.113.7" not in response.body
                assert_common_headers(response)
            if host is None:
                assert b"no Host header" in response.body


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "localhost", "[::1]:{port}",
                                  "status.localhost:{port}", "LOCALHOST:{port}", "127.1.2.3:{port}"])
@pytest_twisted.ensureDeferred
async def test_on_loopback_loopback_hosts_are_answered(reactor, host, password_file):
    site = status_site(lambda: SNAPSHOT, CollectorRegistry(), passwords=password_file, loopback=True)
    async with serving(reactor, site) as port:
        name = host.format(port=port)
        assert (await fetch(reactor, port, "/", host=name)).status == 401
        page = await fetch(reactor, port, "/", host=name, auth=("alice", "open sesame"))
        assert page.status == 200 and list(read(page.body.decode()).rows) == ["20345", "20346"]


@pytest_twisted.ensureDeferred
async def test_two_host_headers_are_refused(reactor):
    site = status_site(lambda: SNAPSHOT, CollectorRegistry(), loopback=True)
    async with serving(reactor, site) as port:
        response = await fetch(reactor, port, "/", host="localhost", headers={"Host": "evil.example"})
        assert response.status == 421


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_password_go_over_tls(reactor, pki, password_file):
    cert, key = pki.server
    description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    assert uses_tls(description) and is_loopback_endpoint(description)
    site = status_site(lambda: SNAPSHOT, counted_registry(), passwords=password_file)
    async with serving(reactor, site, description) as port:
        assert (await fetch(reactor, port, "/", tls=pki)).status == 401
        page = await fetch(reactor, port, "/", tls=pki, auth=("alice", "open sesame"))
        assert page.status == 200 and list(read(page.body.decode()).rows) == ["20345", "20346"]
        api = await fetch(reactor, port, "/api/tunnels", tls=pki, auth=("alice", "open sesame"))
        assert json.loads(api.body) == SNAPSHOT


# The rules, one by one.


@pytest.mark.parametrize(
    "host, loopback",
    [
        (b"localhost", True), (b"localhost:8080", True), (b"LocalHost.", True), (b"localhost:", True),
        (b"a.localhost", True), (b"a.b.localhost:1", True), (b"127.0.0.1", True), (b"127.255.0.9:80", True),
        (b"[::1]", True), (b"[::1]:80", True), (b"::1", True), (b"[::ffff:127.0.0.1]:80", True),
        (None, False), (b"", False), (b"evil.example", False), (b"localhost.evil.example", False),
        (b"evillocalhost", False), (b".localhost", False), (b"a..localhost", False), (b"128.0.0.1", False),
        (b"0.0.0.0", False), (b"[::]", False), (b"[::2]:80", False), (b"[::1", False), (b"[::1]x", False),
        (b"localhost:80x", False), (b"127.0.0.1.evil.example", False), (b"0x7f.0.0.1", False),
        (b"2130706433", False), (b"127.1", False), (b"l\xf6calhost", False), (b"[127.0.0.1]", False),
    ],
)
def test_which_hosts_are_loopback(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "description, loopback, tls",
    [
        ("tcp:8080:interface=127.0.0.1", True, False),
        ("tcp:8080:interface=127.0.0.2", True, False),
        ("tcp:8080:127.0.0.1", True, False),
        ("tcp:8080:interface=localhost", True, False),
        ("tcp6:8080:interface=\\:\\:1", True, False),
        ("tcp6:8080:50:\\:\\:1", True, False),
        ("ssl:8443:interface=127.0.0.1:privateKey=k.pem:certKey=c.pem", True, True),
        ("ssl:8443:privateKey=k.pem:certKey=c.pem:interface=\\:\\:1", True, True),
        ("unix:/run/spore/status.sock", True, False),
        ("tcp:8080", False, False),
        ("tcp:8080:interface=0.0.0.0", False, False),
        ("tcp:8080:interface=192.0.2.1", False, False),
        ("tcp6:8080", False, False),
        ("tcp6:8080:interface=\\:\\:", False, False),
        ("ssl:8443:privateKey=k.pem:certKey=c.pem", False, True),
        ("ssl:8443:privateKey=k.pem:certKey=c.pem:interface=203.0.113.1", False, True),
        ("tls:/etc/spore/certs:8443", False, True),
        ("systemd:domain=INET:index=0", None, False),
        ("8080", None, False),
        ("", None, False),
    ],
)
def test_where_an_endpoint_listens(description, loopback, tls):
    assert is_loopback_endpoint(description) is loopback
    assert uses_tls(description) is tls


def test_beyond_loopback_the_page_needs_a_password_and_tls():
    assert endpoint_problem("tcp:8080:interface=127.0.0.1", None) is None
    assert endpoint_problem("unix:/run/status.sock", None) is None
    assert "password file" in endpoint_problem("tcp:8080", None)
    assert "password file" in endpoint_problem("ssl:8443:privateKey=k:certKey=c", None)
    assert "in clear" in endpoint_problem("tcp:8080", "/etc/spore/passwords")
    assert endpoint_problem("ssl:8443:privateKey=k:certKey=c", "/etc/spore/passwords") is None
    assert "password file" in endpoint_problem("systemd:domain=INET:index=0", None)


def test_the_tree_can_be_served_by_another_site():
    """status_resource is a plain resource: the server may mount it where it likes."""
    root = status_resource(lambda: SNAPSHOT, CollectorRegistry())
    assert set(root.children) == {b"", b"status.js", b"status.css", b"api", b"metrics"}


# A real browser.


class _LiveSnapshot:
    """The snapshot a page is first rendered from, then a newer one for every later request."""

    def __init__(self, first: dict, then: dict) -> None:
        self.first, self.then, self.calls = first, then, 0

    def __call__(self) -> dict:
        self.calls += 1
        return self.first if self.calls == 1 else self.then


def three_tunnels() -> dict:
    tunnels = [
        {"name": "alice", "client": "203.0.113.7:51234", "port": 20345, "opened": "2026-12-02T10:01:00Z",
         "open_seconds": 240.0, "visitors_forwarding": 1, "visitors_pending": 0, "visitors_total": 17,
         "bytes_from_visitors": 1234, "bytes_to_visitors": 5678, "warm": 1},
        {"name": None, "client": "[2001:db8::1]:40000", "port": 20346, "opened": "2026-12-02T08:59:30Z",
         "open_seconds": 3930.5, "visitors_forwarding": 2, "visitors_pending": 1, "visitors_total": 103,
         "bytes_from_visitors": 11111, "bytes_to_visitors": 62212000},
        {"name": "build-server-with-a-rather-long-name", "client": "198.51.100.23:60001", "port": 20401,
         "opened": "2026-12-01T07:00:00Z", "open_seconds": 97500, "visitors_forwarding": 0,
         "visitors_pending": 0, "visitors_total": 4821, "bytes_from_visitors": 3_456_789_012,
         "bytes_to_visitors": 123_456_789_012},
    ]
    server = {"version": "0.1.0", "started": "2026-12-01T06:00:00Z", "now": "2026-12-02T10:05:00Z",
              "tunnels": 3, "visitors_forwarding": 3, "visitors_pending": 1, "visitors_total": 4941,
              "bytes_from_visitors": 3_456_801_357, "bytes_to_visitors": 123_518_906_690}
    return {"server": server, "tunnels": tunnels}


def refreshed(snapshot: dict) -> dict:
    """The same tunnels a little later, one with a name the script must show as text."""
    later = copy.deepcopy(snapshot)
    for tunnel in later["tunnels"]:
        tunnel["visitors_total"] += 5
        tunnel["bytes_to_visitors"] += 1_000_000
    later["tunnels"][0]["name"] = '<img src=x id="pwned">'
    later["server"]["visitors_total"] += 15
    return later


def keep_artifact(screenshot: Path) -> None:
    target = os.environ.get("SPORE_TEST_ARTIFACTS")
    if not target:
        return
    destination = Path(target)
    if destination.suffix.lower() != ".png":
        destination.mkdir(parents=True, exist_ok=True)
        destination = destination / screenshot.name
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, destination)


@pytest.mark.skipif(chromium_missing_reason() is not None, reason=chromium_missing_reason() or "")
@pytest_twisted.ensureDeferred
async def test_a_browser_shows_the_tunnels_and_keeps_them_fresh(reactor, tmp_path):
    first = three_tunnels()
    later = refreshed(first)
    site = status_site(_LiveSnapshot(first, later), CollectorRegistry(), loopback=True)
    async with serving(reactor, site) as port:
        screenshot = tmp_path / "status-page-phone.png"
        dom = await render_async(f"http://127.0.0.1:{port}/", screenshot=str(screenshot), reactor=reactor)
        keep_artifact(screenshot)
    page = read(dom)
    # The script fetched api/tunnels and drew the newer numbers, the hostile name as text.
    assert list(page.rows) == ["20345", "20346", "20401"]
    assert page.rows == {str(t["port"]): expected_row(t) for t in later["tunnels"]}
    assert page.total("visitors_total") == "4956" and page.total("tunnels") == "3"
    assert "pwned" not in page.by_id and not [a for tag, a in page.tags if tag == "img"]
    assert re.fullmatch(r"updated \d\d:\d\d:\d\d", page.text_of("updated"))
    assert "hidden" in page.by_id["lost"]["attrs"]
    assert screenshot.stat().st_size > 1000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(chromium_missing_reason() is not None, reason=chromium_missing_reason() or "")
@pytest_twisted.ensureDeferred
async def test_a_browser_says_when_the_server_stops_answering(reactor):
    root = status_resource(lambda: SNAPSHOT, CollectorRegistry())
    root.putChild(b"api", errorPage(503, "Service Unavailable", "gone"))
    async with serving(reactor, StatusSite(root)) as port:
        page = read(await render_async(f"http://127.0.0.1:{port}/", reactor=reactor))
    assert "hidden" not in page.by_id["lost"]["attrs"]
    assert page.text_of("lost") == "connection lost, retrying"
    assert list(page.rows) == ["20345", "20346"]  # what the server rendered stays


@pytest.mark.skipif(chromium_missing_reason() is not None, reason=chromium_missing_reason() or "")
def test_the_page_from_a_file_keeps_what_it_shows_and_says_it_cannot_refresh(tmp_path):
    """The blocking render, on a page no server serves: its script's fetch cannot succeed."""
    from spore.status_page import STATUS_CSS, STATUS_JS

    (tmp_path / "index.html").write_text(render_page(SNAPSHOT))
    (tmp_path / "status.js").write_text(STATUS_JS)
    (tmp_path / "status.css").write_text(STATUS_CSS)
    page = read(render((tmp_path / "index.html").as_uri()))
    assert list(page.rows) == ["20345", "20346"]
    assert "hidden" not in page.by_id["lost"]["attrs"]
