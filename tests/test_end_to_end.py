"""Real spore server and spore local processes carrying real bytes on loopback."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import spore
from tests.processes import TIMEOUT
from tests.services import Flood, echo, reply_after_eof, reply_to
from tests.visitors import (
    QUICKLY,
    MiB,
    assert_echoes,
    assert_gives_up,
    closed_port,
    connect,
    exchange,
    fingerprint,
    memory,
    receive_all,
    start_local,
    wait_until_refused,
)

# Bytes through the tunnel


def test_echo_through_tunnel(processes, echo_service):
    _, control_port = processes.server()
    _, public_port = processes.local(echo_service.port, control_port)
    assert_echoes(public_port)


def test_server_and_local_service_given_by_name(processes, echo_service):
    # Each name is resolved once, then its address dialled for each visitor (spore.dialing).
    _, control_port = processes.server()
    local = processes.spore("local", str(echo_service.port), "--to", "localhost", "--control-port", str(control_port))
    public_port = int(local.wait_for(r"listening at localhost:(\d+)").group(1))
    for _ in range(20):
        assert_echoes(public_port)
    with ThreadPoolExecutor(10) as visitors:
        replies = list(visitors.map(lambda i: exchange(public_port, b"%d" % i * 1000), range(10), timeout=3 * TIMEOUT))
    assert replies == [b"%d" % i * 1000 for i in range(10)]
    assert echo_service.connections == 30


def test_megabytes_both_ways_arrive_intact(processes, echo_service):
    _, control_port = processes.server()
    _, public_port = processes.local(echo_service.port, control_port)
    data = os.urandom(4 * MiB)
    assert fingerprint(exchange(public_port, data)) == fingerprint(data)


def test_concurrent_visitors_each_get_their_own_bytes(processes, echo_service):
    _, control_port = processes.server()
    _, public_port = processes.local(echo_service.port, control_port)
    payloads = [f"visitor {i}|".encode() * 100 + os.urandom(1000 * i) for i in range(50)]
    # Every visitor is connected before any sends, so all 50 are open at once.
    all_connected = threading.Barrier(len(payloads), timeout=TIMEOUT)
    with ThreadPoolExecutor(len(payloads)) as visitors:
        replies = list(visitors.map(lambda p: exchange(public_port, p, all_connected.wait), payloads, timeout=3 * TIMEOUT))
    assert [fingerprint(r) for r in replies] == [fingerprint(p) for p in payloads]
    assert echo_service.connections == len(payloads)


def test_reply_after_visitor_shuts_down_writing(processes, start_service):
    service = start_service(reply_after_eof)
    _, control_port = processes.server()
    _, public_port = processes.local(service.port, control_port)
    request = b"GET /big HTTP/1.0\r\n\r\n" * 10
    assert fingerprint(exchange(public_port, request)) == fingerprint(reply_to(request))


def test_visitor_that_stops_reading_holds_back_the_service(processes, start_service):
    flood = Flood(limit=200 * MiB, seconds=10, stall=1.0)
    service = start_service(flood)
    server, control_port = processes.server()
    local, public_port = processes.local(service.port, control_port)
    before = {"server": memory(server, "VmRSS"), "local": memory(local, "VmRSS")}
    with connect(public_port, receive_buffer=64 * 1024) as visitor:
        assert flood.done.wait(flood.seconds + TIMEOUT)
        growth = {"server": memory(server, "VmHWM") - before["server"],
                  "local": memory(local, "VmHWM") - before["local"]}
        # Loopback socket buffers on the way hold some MiB; without
        # backpressure the service would write its whole 200 MiB.
        assert flood.stalled, f"the service wrote {flood.written} bytes without ever blocking"
        assert flood.written < 48 * MiB
        assert growth["server"] < 32 * MiB, growth
        assert growth["local"] < 32 * MiB, growth
        # Held back, not dropped: the visitor gets every byte once it reads.
        received = receive_all(visitor)
    assert (len(received), hashlib.sha256(received).hexdigest()) == (flood.written, flood.digest.hexdigest())


# Secrets


SECRET_WAYS = {
    "option": lambda secret: (["--secret", secret], None),
    "SPORE_SECRET": lambda secret: ([], {"SPORE_SECRET": secret}),
    "BORE_SECRET": lambda secret: ([], {"BORE_SECRET": secret}),
}


@pytest.mark.parametrize("way", SECRET_WAYS)
def test_shared_secret_opens_tunnel(processes, echo_service, way):
    args, env = SECRET_WAYS[way]("s3cret")
    _, control_port = processes.server(*args, env=env)
    _, public_port = processes.local(echo_service.port, control_port, *args, env=env)
    assert_echoes(public_port)
    # The server really took the secret: a client without one is turned away.
    without = start_local(processes, control_port, local_port=echo_service.port)
    assert_gives_up(without, "server requires authentication, but no client secret was provided")


@pytest.mark.parametrize(
    "server_args, local_args, message",
    [
        pytest.param(["--secret", "s3cret"], ["--secret", "wrong"], "server error: invalid secret", id="wrong"),
        pytest.param(
            ["--secret", "s3cret"], [],
            "server requires authentication, but no client secret was provided", id="missing",
        ),
        pytest.param(
            [], ["--secret", "s3cret"],
            # The server waits for a Hello, the client for a Challenge: whichever
            # gives up first (3 s each) words the failure.
            "expected authentication challenge, but no secret was required|timed out waiting for initial message",
            id="unexpected",
        ),
    ],
)
def test_secret_mismatch_is_fatal(processes, echo_service, server_args, local_args, message):
    _, control_port = processes.server(*server_args)
    refused = start_local(processes, control_port, *local_args, local_port=echo_service.port)
    assert_gives_up(refused, message, timeout=TIMEOUT)
    # The server goes on serving clients that know its secret.
    _, public_port = processes.local(echo_service.port, control_port, *server_args)
    assert_echoes(public_port)


# Public ports


@pytest.mark.parametrize("asked", [23999, 24010])
def test_port_outside_range_is_refused(processes, asked):
    _, control_port = processes.server("--min-port", "24000", "--max-port", "24009")
    refused = start_local(processes, control_port, "--port", str(asked))
    assert_gives_up(refused, r"server error: client port number not in allowed range")


def test_port_held_by_another_tunnel_is_refused(processes, echo_service):
    _, control_port = processes.server()
    first, public_port = processes.local(echo_service.port, control_port)
    second = start_local(processes, control_port, "--port", str(public_port), local_port=echo_service.port)
    assert_gives_up(second, r"server error: port already in use")
    assert first.popen.poll() is None
    assert_echoes(public_port)


@pytest.mark.parametrize("prefix", ["SPORE", "BORE"])
def test_server_takes_port_range_from_environment(processes, echo_service, prefix):
    lowest, highest = 24100, 24199
    _, control_port = processes.server(env={f"{prefix}_MIN_PORT": str(lowest), f"{prefix}_MAX_PORT": str(highest)})
    _, public_port = processes.local(echo_service.port, control_port)
    assert lowest <= public_port <= highest
    assert_echoes(public_port)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_public_port_closes_when_client_exits(processes, echo_service, signum):
    _, control_port = processes.server()
    local, public_port = processes.local(echo_service.port, control_port)
    assert_echoes(public_port)
    local.signal(signum)
    status = local.wait()
    wait_until_refused(public_port, within=3.0)
    if signum == signal.SIGTERM:
        assert status == 0, local.stderr


# Failures around the client


def test_client_reports_unreachable_server(processes):
    port = closed_port()
    client = start_local(processes, port)
    assert_gives_up(client, rf"127\.0\.0\.1:{port}\b.*connection refused")


def test_without_reconnecting_client_exits_when_server_dies(processes, echo_service):
    server, control_port = processes.server()
    local, _ = processes.local(echo_service.port, control_port, "--no-reconnect")
    server.signal(signal.SIGKILL)
    assert local.wait(QUICKLY) != 0
    assert re.search(rf"server at 127\.0\.0\.1:{control_port} closed the connection", local.stderr), local.stderr


def test_visitor_closed_while_local_service_is_down(processes, start_service):
    _, control_port = processes.server()
    local_port = closed_port()
    local, public_port = processes.local(local_port, control_port)
    with connect(public_port) as visitor:
        visitor.settimeout(QUICKLY)
        assert visitor.recv(1) == b""
    local.wait_for(
        rf"could not connect to local service 127\.0\.0\.1:{local_port} .*connection refused", stream="stderr"
    )
    assert local.popen.poll() is None
    # The same tunnel serves visitors once the service is up.
    start_service(echo, port=local_port)
    assert_echoes(public_port)


# Command line


@pytest.mark.parametrize(
    "how",
    [
        lambda port: ["--listen", f"tcp:{port}:interface=127.0.0.1"],
        lambda port: ["--bind-addr", "127.0.0.1", "--control-port", str(port)],
    ],
    ids=["listen", "control-port"],
)
def test_control_port_in_use(processes, echo_service, how):
    _, control_port = processes.server()
    second = processes.spore("server", "--bind-tunnels", "127.0.0.1", *how(control_port))
    assert second.wait(QUICKLY) != 0
    assert f"127.0.0.1:{control_port}" in second.stderr
    assert "--control-port" in second.stderr
    assert "server listening" not in second.stderr
    _, public_port = processes.local(echo_service.port, control_port)
    assert_echoes(public_port)


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(
            ["server", "--min-port", "3000", "--max-port", "2000"],
            r"--min-port \(3000\) is greater than --max-port \(2000\)", id="min-over-max",
        ),
        pytest.param(["server", "--max-port", "70000"], r"--max-port must be between 1 and 65535, not 70000", id="max-port"),
        pytest.param(["local", "--to", "127.0.0.1"], r"which local port\?", id="no-local-port"),
    ],
)
def test_usage_error(processes, argv, message):
    # Should it start after all, it listens on 127.0.0.1 only.
    safe = ["--listen", "tcp:0:interface=127.0.0.1", "--bind-tunnels", "127.0.0.1"] if argv[0] == "server" else []
    process = processes.spore(*argv, *safe)
    assert process.wait(QUICKLY) == 2
    assert re.search(message, process.stderr), process.stderr
    assert "listening" not in process.stdout + process.stderr


@pytest.mark.parametrize("prefix", ["SPORE", "BORE"])
def test_client_takes_server_and_local_port_from_environment(processes, echo_service, prefix):
    _, control_port = processes.server()
    local = processes.spore(
        "local", "--control-port", str(control_port), "--local-host", "127.0.0.1",
        env={f"{prefix}_SERVER": "127.0.0.1", f"{prefix}_LOCAL_PORT": str(echo_service.port)},
    )
    public_port = int(local.wait_for(r"listening at 127\.0\.0\.1:(\d+)").group(1))
    assert_echoes(public_port)


def test_version(processes):
    process = processes.spore("--version")
    assert process.wait() == 0
    assert process.stdout == f"spore {spore.__version__}\n"


@pytest.mark.parametrize("command, option", [("local", "--local-host"), ("server", "--min-port")])
def test_command_help_lists_its_options(processes, command, option):
    process = processes.spore(command, "--help")
    assert process.wait() == 0
    assert option in process.stdout, process.stdout
