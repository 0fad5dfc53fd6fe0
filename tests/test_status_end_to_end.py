"""The status page, its JSON and ``spore status``, served by a real server with live tunnels."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spore.passwords import hash_password
from tests.browser import chromium_missing_reason, render
from tests.processes import TIMEOUT, executable
from tests.test_named_clients import SECRETS, write_clients
from tests.visitors import exchange

STATUS_LISTENING = r"status page listening on 127\.0\.0\.1:(\d+)"


def status_server(processes, tmp_path: Path, *args: str):
    clients = tmp_path / "clients.json"
    write_clients(clients, {})
    server, control_port = processes.server("--clients", str(clients), *args)
    status_port = int(server.wait_for(STATUS_LISTENING, stream="stderr").group(1))
    return server, control_port, status_port


def get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def spore_status(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [executable("spore"), "status", *args], capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def live_tunnels(processes, echo_service, tmp_path):
    """A server with a status page on loopback, alice's and bob's tunnels, and one visit through alice's."""
    server, control_port, status_port = status_server(processes, tmp_path, "--status", "tcp:0:interface=127.0.0.1")
    _, alice_port = processes.local(echo_service.port, control_port, "--secret", SECRETS["alice"])
    _, bob_port = processes.local(echo_service.port, control_port, "--secret", SECRETS["bob"])
    assert exchange(alice_port, b"x" * 1000) == b"x" * 1000
    return server, status_port, {"alice": alice_port, "bob": bob_port}


def test_the_json_lists_every_tunnel_with_its_name_and_traffic(live_tunnels):
    server, status_port, ports = live_tunnels
    status, body = get(f"http://127.0.0.1:{status_port}/api/tunnels")
    assert status == 200
    report = json.loads(body)
    tunnels = {t["name"]: t for t in report["tunnels"]}
    assert set(tunnels) == {"alice", "bob"} and [t["port"] for t in report["tunnels"]] == sorted(ports.values())
    alice = tunnels["alice"]
    assert alice["port"] == ports["alice"] and alice["client"].startswith("127.0.0.1:")
    assert (alice["visitors_total"], alice["bytes_from_visitors"], alice["bytes_to_visitors"]) == (1, 1000, 1000)
    assert alice["visitors_forwarding"] == alice["visitors_pending"] == 0 and alice["open_seconds"] >= 0
    assert tunnels["bob"]["visitors_total"] == 0
    assert report["server"]["tunnels"] == 2 and report["server"]["bytes_to_visitors"] == 1000
    for secret in SECRETS.values():
        assert secret not in body.decode()


def test_spore_status_prints_the_table(live_tunnels):
    _, status_port, ports = live_tunnels
    done = spore_status(f"http://127.0.0.1:{status_port}/")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["TUNNEL", "PORT"]
    alice = next(line for line in lines if line.startswith("alice (127.0.0.1:"))
    assert f" {ports['alice']} " in alice and "1.0 kB" in alice
    assert "2 tunnels, 0 visitors forwarding, 0 pending; 1 visitors" in done.stdout


def test_a_request_for_another_host_name_is_refused_on_loopback(live_tunnels):
    _, status_port, _ = live_tunnels
    status, body = get(f"http://127.0.0.1:{status_port}/api/tunnels", host="rebound.example")
    assert status in (403, 421) and b"alice" not in body
    assert get(f"http://127.0.0.1:{status_port}/", host=f"localhost:{status_port}")[0] == 200


@pytest.mark.skipif(chromium_missing_reason() is not None, reason=str(chromium_missing_reason()))
def test_the_page_shows_the_tunnels_in_a_real_browser(live_tunnels, tmp_path):
    _, status_port, ports = live_tunnels
    screenshot = tmp_path / "status.png"
    dom = render(f"http://localhost:{status_port}/", screenshot=str(screenshot))
    for name, port in ports.items():
        assert f'data-port="{port}"' in dom and name in dom
    assert screenshot.stat().st_size > 1000
    assert "updated " in dom  # the page's script ran and refreshed it from /api/tunnels
    artifacts = os.environ.get("SPORE_TEST_ARTIFACTS")
    if artifacts:
        shutil.copy(screenshot, Path(artifacts) / "status-page-live.png")


def test_beyond_loopback_the_page_needs_tls_and_passwords(processes, tmp_path):
    for status in ("tcp:0", "tcp:0:interface=0.0.0.0"):
        server = processes.spore("server", "--listen", "tcp:0:interface=127.0.0.1", "--status", status)
        assert server.wait() == 2
        assert f"--status: the status page on {status!r} would be reachable beyond this machine" in server.stderr
    server = processes.spore("server", "--listen", "tcp:0:interface=127.0.0.1", "--status-passwords", "x")
    assert server.wait() == 2 and "--status-passwords is for the status page" in server.stderr


def test_over_tls_the_page_wants_a_password(processes, echo_service, tmp_path, pki):
    passwords = tmp_path / "status-passwords"
    made = subprocess.run([executable("spore"), "password", "carol"], input="long enough password\n",
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("carol:scrypt$") and "long enough" not in made.stdout
    passwords.write_text(made.stdout)
    cert, key = pki.server
    server, control_port, status_port = status_server(
        processes, tmp_path, "--status", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--status-passwords", str(passwords),
    )
    processes.local(echo_service.port, control_port, "--secret", SECRETS["alice"])
    url = f"https://localhost:{status_port}/"

    anonymous = spore_status(url, "--cafile", pki.ca)
    assert anonymous.returncode == 1 and "it needs a password: add --user" in anonymous.stderr
    wrong = spore_status(url, "--cafile", pki.ca, "--user", "carol", env={"SPORE_STATUS_PASSWORD": "not it"})
    assert wrong.returncode == 1 and "wrong user or password" in wrong.stderr
    right = spore_status(url, "--cafile", pki.ca, "--user", "carol", "--json",
                         env={"SPORE_STATUS_PASSWORD": "long enough password"})
    assert right.returncode == 0, right.stderr
    assert [t["name"] for t in json.loads(right.stdout)["tunnels"]] == ["alice"]
    untrusted = spore_status(url, "--user", "carol", env={"SPORE_STATUS_PASSWORD": "long enough password"})
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_a_reload_applies_the_status_password_file(processes, tmp_path, pki):
    passwords = tmp_path / "status-passwords"
    passwords.write_text(f"carol:{hash_password('carols password')}\n")
    cert, key = pki.server
    server, _, status_port = status_server(
        processes, tmp_path, "--status", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--status-passwords", str(passwords),
    )
    url = f"https://localhost:{status_port}/"

    def status_as(user: str, password: str) -> subprocess.CompletedProcess:
        return spore_status(url, "--cafile", pki.ca, "--user", user, env={"SPORE_STATUS_PASSWORD": password})

    assert status_as("carol", "carols password").returncode == 0
    passwords.write_text(f"dave:{hash_password('daves password')}\n")  # carol's access is revoked
    server.signal(signal.SIGHUP)
    server.wait_for("reloaded: 1 status page users", stream="stderr")
    refused = status_as("carol", "carols password")
    assert refused.returncode == 1 and "wrong user or password" in refused.stderr
    assert status_as("dave", "daves password").returncode == 0

    passwords.write_text("dave:plaintext\n")
    server.signal(signal.SIGHUP)
    stays = "reload failed, the status page's users stay: --status-passwords"
    server.wait_for(rf"{stays} {re.escape(str(passwords))}, line 1", stream="stderr")
    assert status_as("dave", "daves password").returncode == 0


def test_a_bad_password_file_stops_the_start(processes, tmp_path, pki):
    passwords = tmp_path / "status-passwords"
    passwords.write_text("carol:plaintext\n")
    cert, key = pki.server
    server = processes.spore(
        "server", "--listen", "tcp:0:interface=127.0.0.1", "--status-passwords", str(passwords),
        "--status", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    assert server.wait() == 2
    assert f"--status-passwords {passwords}" in server.stderr and "line 1" in server.stderr


def test_spore_status_says_when_no_server_answers():
    done = spore_status("http://127.0.0.1:9/")
    assert done.returncode == 1 and done.stderr.startswith("Error: cannot reach http://127.0.0.1:9/api/tunnels")
