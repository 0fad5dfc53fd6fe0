"""Spore against captures of real bore 0.5.2 sessions: same frames, same closes.

The server tests play the captured clients and visitors against a Spore
server; the client tests play the captured server (and local service)
against a Spore client.  Both run on a fake clock at the captured times.
Uuids and ports are taken from the capture, so the bytes compare exactly;
heartbeats are compared by count, as their timing is bore's and not the
protocol's.
"""

from __future__ import annotations

import io
import uuid

import pytest

from spore.local import LocalClient
from spore.server import ServerFactory
from spore.settings import LocalSettings, ServerSettings
from tests.fakes import MemoryEndpoint, TunnelReactor, connect
from tests.replay import (
    HEARTBEAT,
    Replay,
    command_options,
    frames,
    generated_uuids,
    load,
    without_heartbeats,
)


class _CapturedPorts:
    """Picks the "random" public ports the captured server picked."""

    def __init__(self, ports):
        self.ports = iter(ports)

    def randint(self, low, high):
        port = next(self.ports)
        assert low <= port <= high
        return port


class ServerReplay(Replay):
    def __init__(self, transcript, monkeypatch):
        self.reactor = TunnelReactor()
        super().__init__(transcript, self.reactor, "client", {"control", "accept", "public"})
        options = command_options(next(c["cmd"] for c in transcript["commands"] if c["cmd"].startswith("bore server")))
        settings = ServerSettings(
            min_port=int(options["min-port"]),
            max_port=int(options["max-port"]),
            secrets=(options["secret"],) if "secret" in options else (),
        )
        hello_ports = [
            int(f[9:-2]) for p in self.played.values() if p.role == "control"
            for f in frames(p.expected("server")) if f.startswith(b'{"Hello"')
        ]
        self.factory = ServerFactory(settings, self.reactor, rng=_CapturedPorts(hello_ports))
        uuids = iter(generated_uuids(transcript))
        monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(next(uuids)))

    def open(self, played):
        if played.role == "public":
            port = int(played.connection["server"].rsplit(":", 1)[1])
            if port not in self.reactor.listening:
                # The tunnel is gone: the connection must be refused, as bore's was.
                assert played.connection["events"][1]["kind"] == "RST", f"port {port} closed too early"
                played.refused = True
                return
            played.protocol, played.transport = self.reactor.visit(port)
        else:
            played.protocol, played.transport = connect(self.factory)


SERVER_SCENARIOS = [
    "a_no_secret", "b_secret", "c_wrong_secret", "d_client_no_secret", "e_server_no_secret",
    "f_port_out_of_range", "g_port_in_use", "h_bad_frames", "h_bad_frames_secret",
    "i1_heartbeat", "i2_pending_timeout",
]


@pytest.mark.parametrize("scenario", SERVER_SCENARIOS)
def test_server_answers_as_bore_did(scenario, monkeypatch):
    replay = ServerReplay(load(scenario), monkeypatch)
    replay.run()
    for played in replay.played.values():
        if played.refused:
            continue
        expected, sent = played.expected("server"), played.transport.value()
        where = f"{scenario} connection {played.connection['index']} ({played.role})"
        bores, spores = without_heartbeats(expected), without_heartbeats(sent)
        if spores != bores:
            # bore closes some bad connections without a word; Spore may say why first.
            extra = spores[len(bores):]
            assert spores.startswith(bores) and frames(extra) == [extra] and extra.startswith(b'{"Error":'), where
        if played.role == "control" and HEARTBEAT in expected:
            # bore also beats right after each Connection; Spore keeps to the interval.
            connections = expected.count(b'"Connection"')
            assert 0 <= expected.count(HEARTBEAT) - sent.count(HEARTBEAT) <= connections + 1, where


def test_heartbeats_keep_bores_cadence(monkeypatch):
    replay = ServerReplay(load("i1_heartbeat"), monkeypatch)
    replay.run()
    (control,) = [p for p in replay.played.values() if p.role == "control"]
    assert control.transport.value().count(HEARTBEAT) == control.expected("server").count(HEARTBEAT) == 11


class ClientReplay(Replay):
    def __init__(self, transcript, client_command):
        self.reactor = TunnelReactor()
        super().__init__(transcript, self.reactor, "server", {"control", "accept", "local-service"})
        options = command_options(client_command)
        self.settings = LocalSettings(
            local_port=int(options["args"][0]),
            to=options["to"],
            port=int(options.get("port", 0)),
            secret=options.get("secret"),
        )
        self.server, self.local, self.stdout = MemoryEndpoint(), MemoryEndpoint(), io.StringIO()
        self.client = LocalClient(self.settings, self.reactor, self.server, self.local, stdout=self.stdout)
        self.outcome = []
        self.client.start().addBoth(self.outcome.append)
        pid = next(n["pid"] for n in transcript["driver_notes"] if n.get("cmd") == client_command and "pid" in n)
        for note in transcript["driver_notes"]:
            if note["msg"].startswith(f"sending SIGINT to pid {pid}"):
                self.reactor.callLater(note["t"], self.client.stop)
        self.opened = {"control": 0, "accept": 0, "local-service": 0}

    def open(self, played):
        # Spore connected on its own; match its connections to the capture's in order.
        pool = self.local if played.role == "local-service" else self.server
        roles = ("local-service",) if played.role == "local-service" else ("control", "accept")
        index = sum(self.opened[r] for r in roles)
        assert len(pool.connections) > index, f"Spore did not open connection {played.connection['index']} ({played.role})"
        played.protocol, played.transport = pool.connections[index]
        self.opened[played.role] += 1


def _client_runs():
    for scenario in ["a_no_secret", "b_secret", "c_wrong_secret", "d_client_no_secret", "e_server_no_secret",
                     "f_port_out_of_range", "g_port_in_use", "i1_heartbeat"]:
        transcript = load(scenario)
        clients = [c["cmd"] for c in transcript["commands"] if c["cmd"].startswith("bore local")]
        yield pytest.param(scenario, clients[-1], id=scenario)


@pytest.mark.parametrize("scenario, command", list(_client_runs()))
def test_client_speaks_as_bore_did(scenario, command):
    transcript = load(scenario)
    if "g_port_in_use" == scenario:  # the second client, the one refused
        transcript["connections"] = [c for c in transcript["connections"] if c["index"] == 1]
    replay = ClientReplay(transcript, command)
    replay.run()
    for played in replay.played.values():
        where = f"{scenario} connection {played.connection['index']} ({played.role})"
        assert played.transport.value() == played.expected("client"), where
    log = [l for l in transcript["process_logs"].values() if l["cmd"] == command][-1]
    listening = [line.split("listening at ")[1] for line in log["output"] if "listening at" in line]
    assert replay.stdout.getvalue() == "".join(f"listening at {a}\n" for a in listening)
    errors = [line[len("Error: "):] for line in log["output"] if line.startswith("Error: ")]
    if errors:
        (failure,) = replay.outcome
        assert failure.getErrorMessage().startswith(errors[0])  # Spore may add a hint
