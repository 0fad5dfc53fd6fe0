"""TLS on the control plane with real spore processes: what users see, good and bad.

Certificates come from the session's test CA (``pki`` in conftest.py).
"""

from __future__ import annotations

import shutil
import socket

import pytest

from tests.processes import TIMEOUT
from tests.visitors import assert_echoes, assert_gives_up, start_local


def tls_server(processes, pair, *args):
    certfile, keyfile = pair
    return processes.server("--tls", "--certfile", certfile, "--keyfile", keyfile, *args)


def test_a_tunnel_over_tls_carries_bytes(processes, echo_service, pki):
    _, control_port = tls_server(processes, pki.server)
    _, public_port = processes.local(echo_service.port, control_port, "--tls", "--cacertfile", pki.ca)
    assert_echoes(public_port)


def test_a_tls_server_given_by_name_carries_every_visitor(processes, echo_service, pki):
    # Data connections go to the address "localhost" resolved to for the control connection.
    _, control_port = tls_server(processes, pki.server)
    client = processes.spore(
        "local", str(echo_service.port), "--to", "localhost", "--control-port", str(control_port),
        "--tls", "--cacertfile", pki.ca,
    )
    public_port = int(client.wait_for(r"listening at localhost:(\d+)").group(1))
    assert_echoes(public_port)
    assert_echoes(public_port)


def test_the_control_port_speaks_only_tls(processes, pki):
    _, control_port = tls_server(processes, pki.server, "--secret", "s3cret")
    # A plain server with a secret would send its Challenge at once.
    with socket.create_connection(("127.0.0.1", control_port), timeout=TIMEOUT) as conn:
        conn.sendall(b"\0")
        try:
            answer = conn.recv(100)
        except ConnectionResetError:  # the server gave up on the handshake
            answer = b""
        assert answer[:1] != b"{"


def test_mutual_tls_lets_in_a_client_with_a_certificate_from_the_ca(processes, echo_service, pki):
    _, control_port = tls_server(processes, pki.server, "--cacertfile", pki.ca)
    certfile, keyfile = pki.client
    _, public_port = processes.local(
        echo_service.port, control_port, "--tls", "--cacertfile", pki.ca, "--certfile", certfile, "--keyfile", keyfile
    )
    assert_echoes(public_port)


@pytest.mark.parametrize(
    "server, client, message",
    [
        ("server", [], "the server's certificate is not trusted"),
        ("expired_server", ["--cacertfile", "{ca}"], "the server's certificate has expired"),
        ("wrong_name_server", ["--cacertfile", "{ca}"], "the server's certificate is not valid for 127.0.0.1"),
        ("other_ca_server", ["--cacertfile", "{ca}"], "the server's certificate is not trusted"),
    ],
)
def test_a_certificate_the_client_cannot_trust_ends_it_clearly(processes, pki, server, client, message):
    _, control_port = tls_server(processes, getattr(pki, server))
    args = [a.format(ca=pki.ca) for a in client]
    assert_gives_up(start_local(processes, control_port, "--tls", *args), f"TLS with 127.0.0.1:{control_port} failed: {message}")


@pytest.mark.parametrize("certificate", [None, "other_ca_client"])
def test_mutual_tls_turns_away_a_client_without_a_good_certificate(processes, pki, certificate):
    _, control_port = tls_server(processes, pki.server, "--cacertfile", pki.ca)
    args = ["--certfile", getattr(pki, certificate)[0], "--keyfile", getattr(pki, certificate)[1]] if certificate else []
    client = start_local(processes, control_port, "--tls", "--cacertfile", pki.ca, *args)
    assert_gives_up(client, "client certificate")


def test_plain_tcp_to_a_tls_server_says_to_use_tls(processes, pki):
    _, control_port = tls_server(processes, pki.server)
    assert_gives_up(start_local(processes, control_port), r"add --tls")


def test_tls_to_a_plain_server_says_it_does_not_speak_tls(processes, pki):
    _, control_port = processes.server()
    assert_gives_up(start_local(processes, control_port, "--tls", "--cacertfile", pki.ca), "does not speak TLS")


def test_insecure_connects_without_checking_and_says_so_each_time(processes, echo_service, pki):
    _, control_port = tls_server(processes, pki.wrong_name_server)
    client, public_port = processes.local(echo_service.port, control_port, "--tls", "--insecure")
    assert_echoes(public_port)
    assert_echoes(public_port)
    # The control connection and each of the two data connections.
    assert client.stderr.count("not checking the certificate of 127.0.0.1") == 3


def test_a_client_endpoint_string_can_do_the_dialing(processes, echo_service, pki):
    _, control_port = tls_server(processes, pki.server)
    client = processes.spore(
        "local", str(echo_service.port), "--local-host", "127.0.0.1", "--tls", "--cacertfile", pki.ca,
        "--connect", f"tcp:host=127.0.0.1:port={control_port}",
    )
    public_port = int(client.wait_for(r"listening at 127\.0\.0\.1:(\d+)").group(1))
    assert_echoes(public_port)


def test_a_tls_endpoint_string_works_too(processes, echo_service, pki, tmp_path):
    _, control_port = tls_server(processes, pki.server)
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(pki.ca, trust / "ca.pem")
    client = processes.spore(
        "local", str(echo_service.port), "--local-host", "127.0.0.1",
        "--connect", f"tls:host=127.0.0.1:port={control_port}:trustRoots={trust}",
    )
    public_port = int(client.wait_for(r"listening at 127\.0\.0\.1:(\d+)").group(1))
    # Twisted's own TLS (tls: strings) has no half-close: ask and answer without one.
    with socket.create_connection(("127.0.0.1", public_port), timeout=TIMEOUT) as visitor:
        visitor.sendall(b"ping")
        assert visitor.recv(4) == b"ping"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tls", "--certfile", "/nonexistent.pem", "--keyfile", "/nonexistent.key"], "--certfile /nonexistent.pem: no such file"),
        (["--certfile", "{cert}", "--keyfile", "{key}"], "add --tls"),
        (["--tls", "--certfile", "{cert}"], "--tls needs --certfile and --keyfile"),
        (["--tls", "--certfile", "{cert}", "--keyfile", "{other_key}"], "does not match"),
    ],
)
def test_bad_server_tls_options_stop_the_start(processes, pki, args, message):
    cert, key = pki.server
    args = [a.format(cert=cert, key=key, other_key=pki.client[1]) for a in args]
    server = processes.spore("server", "--listen", "tcp:0:interface=127.0.0.1", *args)
    assert server.wait() == 2
    assert message in server.stderr
    assert "server listening" not in server.stderr
