"""The Twisted plugins: ``twist``/``twistd`` running spore-server and spore-local for real."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.processes import TIMEOUT, Process, executable

REPO = Path(__file__).resolve().parent.parent

MIN_PORT, MAX_PORT = 20000, 29999
"""Public ports handed out by the servers under test: below Linux's ephemeral range."""

SERVER_ARGS = (
    "--listen", "tcp:0:interface=127.0.0.1", "--bind-tunnels", "127.0.0.1",
    "--min-port", str(MIN_PORT), "--max-port", str(MAX_PORT),
)
SERVER_LISTENING = r"server listening on 127\.0\.0\.1:(\d+)"
LISTENING_AT = r"(?m)^listening at 127\.0\.0\.1:(\d+)$"


def twist(processes, *args: str) -> Process:
    """``twist --log-format=text ARGS``: logs are text, on stdout."""
    return processes.start(executable("twist"), "--log-format=text", *args)


def twist_server(processes, *args: str) -> tuple[Process, int]:
    """``twist spore-server`` on an OS-chosen control port: (process, control port)."""
    process = twist(processes, "spore-server", *SERVER_ARGS, *args)
    return process, int(process.wait_for(SERVER_LISTENING).group(1))


def echo_through(public_port: int, payload: bytes = b"hello through the tunnel") -> None:
    """Send ``payload`` to a tunnel's public port and check the echo service sends it back."""
    with socket.create_connection(("127.0.0.1", public_port), timeout=TIMEOUT) as visitor:
        visitor.sendall(payload)
        visitor.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := visitor.recv(65536):
            received += chunk
    assert received == payload


def poll(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> object:
    """Wait, polling, until ``condition()`` is true; fail naming ``what`` if it never is."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return result


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return not re.search(r"^State:\s+Z", status, re.M)


class Daemon:
    """A daemon twistd started, which the test's processes fixture never sees."""

    def __init__(self, directory: Path) -> None:
        self.pidfile = directory / "spore.pid"
        self.logfile = directory / "spore.log"
        self.pid: int | None = None

    def read_pid(self) -> int:
        text = poll(lambda: self.pidfile.exists() and self.pidfile.read_text().strip(), f"pid file {self.pidfile}")
        self.pid = int(text)
        return self.pid

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def kill(self) -> None:
        if self.pid is None and self.pidfile.exists():
            try:
                self.pid = int(self.pidfile.read_text().strip())
            except ValueError:
                return
        if self.pid is not None and alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
            poll(lambda: not alive(self.pid), f"killed daemon {self.pid} gone", timeout=5)


@pytest.fixture
def daemon(tmp_path):
    """Where a daemonized twistd keeps its pid and log; killed at the end whatever happens."""
    running = Daemon(tmp_path)
    try:
        yield running
    finally:
        running.kill()


def test_twist_server_carries_a_tunnel(processes, echo_service):
    _, control_port = twist_server(processes)
    _, public_port = processes.local(echo_service.port, control_port)
    assert MIN_PORT <= public_port <= MAX_PORT
    echo_through(public_port)


def test_twist_local_prints_its_address_and_carries_bytes(processes, echo_service):
    _, control_port = processes.server()
    local = twist(
        processes, "spore-local", str(echo_service.port), "--to", "127.0.0.1",
        "--control-port", str(control_port), "--local-host", "127.0.0.1",
    )
    public_port = int(local.wait_for(LISTENING_AT).group(1))
    echo_through(public_port)


def test_twist_local_with_wrong_secret_fails(processes, echo_service):
    _, control_port = processes.server("--secret", "right")
    local = twist(
        processes, "spore-local", str(echo_service.port), "--to", "127.0.0.1",
        "--control-port", str(control_port), "--local-host", "127.0.0.1", "--secret", "wrong",
    )
    assert local.wait() != 0
    assert "server error: invalid secret" in local.stderr


def test_twistd_daemon_serves_and_stops_on_sigterm(processes, echo_service, daemon, tmp_path):
    starter = processes.start(
        executable("twistd"), f"--pidfile={daemon.pidfile}", f"--logfile={daemon.logfile}",
        "spore-server", *SERVER_ARGS, cwd=str(tmp_path),
    )
    assert starter.wait() == 0, f"twistd failed to daemonize\nstderr:\n{starter.stderr}\nlog:\n{daemon.log()}"
    pid = daemon.read_pid()
    match = poll(lambda: re.search(SERVER_LISTENING, daemon.log()), f"listening line in {daemon.logfile}")
    control_port = int(match.group(1))

    _, public_port = processes.local(echo_service.port, control_port)
    echo_through(public_port)

    os.kill(pid, signal.SIGTERM)
    poll(lambda: not alive(pid), f"daemon {pid} gone after SIGTERM")
    poll(lambda: not daemon.pidfile.exists(), f"pid file {daemon.pidfile} removed")


def test_twistd_foreground_serves_and_exits_cleanly(processes, echo_service, tmp_path):
    server = processes.start(
        executable("twistd"), "-n", f"--pidfile={tmp_path / 'spore.pid'}",
        "spore-server", *SERVER_ARGS, cwd=str(tmp_path),
    )
    control_port = int(server.wait_for(SERVER_LISTENING).group(1))
    _, public_port = processes.local(echo_service.port, control_port)
    echo_through(public_port)

    server.signal(signal.SIGTERM)
    status = server.wait()
    output = f"exit status {status}\nstdout:\n{server.stdout}\nstderr:\n{server.stderr}"
    # Twisted >= 20.3 ends twistd, after a clean shutdown, by re-raising the signal
    # that stopped it (twisted.application.app._exitWithSignal): -SIGTERM is its
    # "stopped as asked", and what systemd counts as a clean exit.
    assert status in (0, -signal.SIGTERM), output
    assert "Server Shut Down." in server.stdout, output
    assert "Traceback" not in server.stdout + server.stderr, output


def test_twist_server_rejects_inverted_port_range(processes):
    server = processes.start(executable("twist"), "spore-server", "--min-port", "5000", "--max-port", "4000")
    assert server.wait() != 0
    errors = [line for line in (server.stdout + server.stderr).splitlines() if "rror" in line]
    assert any("--min-port" in line and "--max-port" in line for line in errors), errors


def test_twist_help_lists_both_plugins(processes):
    help_ = processes.start(executable("twist"), "--help")
    assert help_.wait() == 0
    commands = {line.split()[0] for line in help_.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert {"spore-server", "spore-local"} <= commands, help_.stdout


@pytest.mark.parametrize("path", ["twisted/__init__.py", "twisted/plugins/__init__.py"])
def test_no_init_hides_twisted(path):
    assert not (REPO / path).exists(), f"{path} would shadow Twisted's own package"


def free_low_port() -> int:
    """A port below 1024 on 127.0.0.1 that nothing holds (only root can bind it)."""
    for port in range(1000, 900, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a low port and dropping to another user needs root")
def test_twistd_drops_privileges_after_binding_a_low_port(processes, echo_service):
    import pwd

    nobody = pwd.getpwnam("nobody")
    control_port = free_low_port()
    server = processes.start(
        executable("twistd"), "-n", "--pidfile=", f"--uid={nobody.pw_uid}", f"--gid={nobody.pw_gid}",
        "spore-server", "--listen", f"tcp:{control_port}:interface=127.0.0.1", "--bind-tunnels", "127.0.0.1",
        "--min-port", str(MIN_PORT), "--max-port", str(MAX_PORT),
    )
    server.wait_for(rf"server listening on 127\.0\.0\.1:{control_port}")  # bound while still root

    def uids() -> list[int]:
        status = Path(f"/proc/{server.popen.pid}/status").read_text()
        return [int(u) for u in re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()]

    poll(lambda: uids() == [nobody.pw_uid] * 4, "twistd to become nobody")
    _, public_port = processes.local(echo_service.port, control_port)
    echo_through(public_port)
