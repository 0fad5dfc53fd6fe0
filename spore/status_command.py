"""``spore status`` (a server's tunnels in a terminal, from its status page) and ``spore password``."""

from __future__ import annotations

import base64
import getpass
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from twisted.python import usage

from spore.options import SporeOptions
from spore.status_page import format_bytes, format_duration

DEFAULT_URL = "http://127.0.0.1:9465/"
PASSWORD_VARIABLE = "SPORE_STATUS_PASSWORD"


class StatusError(Exception):
    """The status could not be had; the message says why, for a person."""


class StatusOptions(SporeOptions):
    synopsis = "[options] [URL]"
    longdesc = (
        "Print the tunnels of a running server, from its status page (spore server --status-port or --status). "
        f"URL defaults to {DEFAULT_URL}. With --user, the password is read from ${PASSWORD_VARIABLE} or asked for."
    )
    optParameters = [
        ["user", "u", None, "User name, for a status page behind a password"],
        ["cafile", None, None, "CA certificate (PEM) to trust for an https URL, besides the system's"],
    ]
    optFlags = [["json", None, "Print the JSON as the server sent it"]]

    def parseArgs(self, url: str = DEFAULT_URL) -> None:
        self.url = url

    def configure(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise usage.UsageError(f"URL must begin with http:// or https://, not {self.url!r}")


class PasswordOptions(usage.Options):
    synopsis = "USER"
    longdesc = (
        "Print a line for the status page's password file (--status-passwords): USER and a scrypt hash of a "
        "password, typed twice, or read from standard input when that is not a terminal."
    )

    def parseArgs(self, user: str) -> None:
        if not user or ":" in user or user != user.strip():
            raise usage.UsageError(f"USER must be a name without ':' or surrounding spaces, not {user!r}")
        self.user = user


def fetch(options: StatusOptions, environ=os.environ, ask=getpass.getpass) -> dict:
    """The server's ``api/tunnels`` JSON."""
    url = urllib.parse.urljoin(options.url if options.url.endswith("/") else options.url + "/", "api/tunnels")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if options["user"]:
        password = environ.get(PASSWORD_VARIABLE) or ask(f"password for {options['user']} at {options.url}: ")
        token = base64.b64encode(f"{options['user']}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=options["cafile"]) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        if e.code == 401:
            hint = "wrong user or password" if options["user"] else "it needs a password: add --user"
            raise StatusError(f"{url}: {hint}") from None
        raise StatusError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise StatusError(f"cannot reach {url}: {reason}") from None
    try:
        report = json.loads(body)
    except ValueError:
        report = None
    shaped = isinstance(report, dict) and isinstance(report.get("server"), dict)
    if not (shaped and isinstance(report.get("tunnels"), list)):
        raise StatusError(f"{url} did not answer with a Spore server's status")
    return report


def table(report: dict) -> str:
    """The report as a terminal table: a row per tunnel, then the server's totals."""
    header = ("TUNNEL", "PORT", "OPEN", "FORWARDING", "PENDING", "VISITORS", "FROM VISITORS", "TO VISITORS")
    rows = [header]
    for t in report["tunnels"]:
        who = f"{t['name']} ({t['client']})" if t.get("name") else t["client"]
        rows.append((
            who, str(t["port"]), format_duration(t["open_seconds"]), str(t["visitors_forwarding"]),
            str(t["visitors_pending"]), str(t["visitors_total"]), format_bytes(t["bytes_from_visitors"]),
            format_bytes(t["bytes_to_visitors"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    if not report["tunnels"]:
        lines.append("(no tunnels open)")
    s = report["server"]
    started = datetime.fromisoformat(s["started"].replace("Z", "+00:00"))
    now = datetime.fromisoformat(s["now"].replace("Z", "+00:00"))
    up = format_duration((now - started).total_seconds())
    lines.append(
        f"\n{s['tunnels']} tunnels, {s['visitors_forwarding']} visitors forwarding, {s['visitors_pending']} pending; "
        f"{s['visitors_total']} visitors, {format_bytes(s['bytes_from_visitors'])} from and "
        f"{format_bytes(s['bytes_to_visitors'])} to them since {s['started']} (up {up})"
    )
    return "\n".join(line.rstrip() for line in lines)


def status(options: StatusOptions) -> int:
    try:
        report = fetch(options)
    except StatusError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    print(json.dumps(report, indent=2) if options["json"] else table(report))
    return 0


def password(options: PasswordOptions, stdin=sys.stdin) -> int:
    from spore.passwords import hash_password

    if stdin.isatty():
        typed = getpass.getpass(f"password for {options.user}: ")
        if getpass.getpass("again: ") != typed:
            sys.stderr.write("Error: the two passwords differ\n")
            return 1
    else:
        typed = stdin.readline().rstrip("\n")
    if len(typed) < 8:
        sys.stderr.write("Error: a password needs at least 8 characters\n")
        return 1
    print(f"{options.user}:{hash_password(typed)}")
    return 0
