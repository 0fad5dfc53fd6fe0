"""Settings from a JSON file: precedence, and errors that name the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.python import usage

from spore import local_tap, server_tap
from tests.visitors import assert_echoes


def write(tmp_path: Path, settings, name: str = "spore.json") -> str:
    path = tmp_path / name
    path.write_text(settings if isinstance(settings, str) else json.dumps(settings, indent=2))
    return str(path)


def server_options(argv, environ=None):
    options = server_tap.Options()
    options.environ = environ or {}
    options.parseOptions(argv)
    return options


def test_the_file_sets_what_the_command_line_and_environment_leave_unset(tmp_path):
    path = write(tmp_path, {"min_port": 20000, "max_port": "20999", "secret": ["a", "b"], "allow": ["10.0.0.0/8"],
                            "heartbeat_interval": 0.25, "max_conns_per_ip": 5})
    options = server_options(["--config", path, "--max-port", "21999"], {"SPORE_MIN_PORT": "20500"})
    settings = options.settings
    assert (settings.min_port, settings.max_port) == (20500, 21999)  # environment, then command line
    assert settings.secrets == ("a", "b") and settings.heartbeat_interval == 0.25
    assert options.rules.admits("10.1.2.3") and not options.rules.admits("192.0.2.1")
    assert options.max_conns_per_ip == 5
    assert settings.max_handshakes == 1024  # a default


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"min_port": 20000, "mni_port": 1}, "{path}: unknown key 'mni_port'"),
        ({"min-port": 20000}, "{path}: unknown key 'min-port'"),
        ({"min_port": True}, "{path}: min_port must be a string or a number"),
        ({"min_port": [1]}, "{path}: min_port must be a string or a number"),
        ({"tls": "yes"}, "{path}: tls must be true or false"),
        ({"allow": ["10.0.0.0/8", 7]}, "{path}: allow must be a list of strings"),
        ({"max_port": 70000}, "{path}: max_port must be between 1 and 65535, not 70000"),
        ({"min_port": 3000, "max_port": 2000}, "{path}: min_port (3000) is greater than {path}: max_port (2000)"),
        ({"bind_addr": "localhost"}, "{path}: bind_addr must be an IP address"),
        ("[1, 2]", "{path}: must hold a JSON object of settings"),
        ('{\n  "min_port": 20000,\n  "max_port": 20100,\n}', "{path} line 4 column 1: Expecting property name"),
    ],
)
def test_a_bad_file_is_refused_naming_file_and_key(tmp_path, settings, message):
    path = write(tmp_path, settings)
    with pytest.raises(usage.UsageError) as error:
        server_options(["--config", path])
    assert message.format(path=path) in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(usage.UsageError, match="nothing.json: No such file or directory"):
        server_options(["--config", str(tmp_path / "nothing.json")])


def test_the_client_reads_its_certificate_under_either_name(tmp_path, pki):
    certfile, keyfile = pki.client
    path = write(tmp_path, {"to": "127.0.0.1", "local_port": 3000, "tls": True, "cacertfile": pki.ca,
                            "client_certfile": certfile, "client_keyfile": keyfile})
    options = local_tap.Options()
    options.environ = {}
    options.parseOptions(["--config", path])
    assert (options["certfile"], options["keyfile"]) == (certfile, keyfile)
    assert options.settings.local_port == 3000 and options.settings.tls


def test_real_processes_run_from_config_files(processes, echo_service, tmp_path):
    server_file = write(tmp_path, {"listen": "tcp:0:interface=127.0.0.1", "bind_tunnels": "127.0.0.1",
                                   "min_port": 20000, "max_port": 29999, "secret": "from a file"}, "server.json")
    server = processes.spore("server", "--config", server_file)
    control_port = int(server.wait_for(r"server listening on 127\.0\.0\.1:(\d+)", stream="stderr").group(1))
    client_file = write(tmp_path, {"to": "127.0.0.1", "control_port": control_port, "local_port": echo_service.port,
                                   "local_host": "127.0.0.1", "secret": "from a file"}, "client.json")
    client = processes.spore("local", "--config", client_file)
    public_port = int(client.wait_for(r"listening at 127\.0\.0\.1:(\d+)").group(1))
    assert 20000 <= public_port <= 29999
    assert_echoes(public_port)


def test_a_bad_file_starts_nothing(processes, tmp_path):
    path = write(tmp_path, {"listen": "tcp:0:interface=127.0.0.1", "max_port": "lots"})
    server = processes.spore("server", "--config", path)
    assert server.wait() == 2
    assert f"{path}: max_port must be a whole number, not 'lots'" in server.stderr
    assert "listening" not in server.stderr
