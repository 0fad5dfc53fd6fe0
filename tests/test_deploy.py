"""The files in deploy/: each unit's, image's and manifest's command run for real on 127.0.0.1.

Paths the files assume on a real host are mapped into the test: /opt/spore/bin
to this Python's bin directory, /etc/spore/ to a temporary directory holding
the example configs with test ports.  Nothing here needs systemd, Docker or
Kubernetes running; ``systemd-analyze`` is used where it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from fnmatch import fnmatch
from itertools import pairwise
from pathlib import Path

import pytest
from twisted.python import usage

from spore import server_tap
from tests.processes import TIMEOUT, executable
from tests.visitors import assert_echoes, closed_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SYSTEMD = DEPLOY / "systemd"
BIN = Path(sys.executable).parent

MIN_PORT, MAX_PORT = 20000, 29999
"""Public ports the servers under test hand out: below Linux's ephemeral range."""

SERVER_LISTENING = r"server listening on 127\.0\.0\.1:(\d+)"
METRICS_LISTENING = r"metrics listening on 127\.0\.0\.1:(\d+)"
LISTENING_AT = r"(?m)^listening at 127\.0\.0\.1:(\d+)$"

SERVICES = ["spore-server.service", "spore-server-activated.service", "spore-local@.service"]


# --- systemd units ---------------------------------------------------------


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values, in order]}} (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    logical = ""
    for line in path.read_text().splitlines():
        if not logical and line.lstrip().startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = (logical + line).strip(), ""
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"{path}: stray line {line!r}"
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def host_paths(argument: str, etc: Path) -> str:
    """An argument with the host's paths mapped into the test."""
    return argument.replace("/opt/spore/bin/", f"{BIN}/").replace("/etc/spore/", f"{etc}/")


def exec_start(unit: str, etc: Path, instance: str | None = None) -> list[str]:
    """The unit's ExecStart as argv, its specifiers expanded and its paths mapped into the test."""
    (command,) = read_unit(SYSTEMD / unit)["Service"]["ExecStart"]
    command = command.lstrip("-@:+!")  # systemd's prefixes
    if instance is not None:
        command = command.replace("%i", instance)
    assert "%" not in command.replace("%%", ""), f"unexpanded specifier in {command!r}"
    argv = [host_paths(arg, etc) for arg in shlex.split(command.replace("%%", "%"))]
    assert Path(argv[0]).parent == BIN, f"{unit} must run Spore from /opt/spore/bin, not {argv[0]}"
    return argv


def example(name: str) -> dict:
    return json.loads((DEPLOY / "config" / name).read_text())


def write_server_config(etc: Path, name: str = "server.json") -> Path:
    """deploy/config/server.json with loopback, OS-chosen ports, at etc/``name``."""
    config = example("server.json") | {
        "listen": "tcp:0:interface=127.0.0.1",
        "bind_tunnels": "127.0.0.1",
        "min_port": MIN_PORT,
        "max_port": MAX_PORT,
        "metrics": "tcp:0:interface=127.0.0.1",
    }
    path = etc / name
    path.write_text(json.dumps(config))
    return path


def carries_a_tunnel(processes, echo_service, control_port: int) -> None:
    _, public_port = processes.local(echo_service.port, control_port)
    assert MIN_PORT <= public_port <= MAX_PORT
    assert_echoes(public_port)


def test_server_unit_serves_tunnels(processes, echo_service, tmp_path):
    write_server_config(tmp_path)
    server = processes.start(*exec_start("spore-server.service", tmp_path))
    control_port = int(server.wait_for(SERVER_LISTENING, stream="stderr").group(1))
    carries_a_tunnel(processes, echo_service, control_port)


ACTIVATE = """
import os, socket, sys
# What systemd does for a .socket unit: bind and listen, then start the
# service with the socket at fd 3 and LISTEN_* naming it for that process.
listener = socket.socket(socket.AF_INET)
listener.bind(("127.0.0.1", 0))
listener.listen(128)
print(listener.getsockname()[1], flush=True)
os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)  # a no-op dup2 (fd already 3) keeps close-on-exec
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES=sys.argv[1], LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_socket_activated_server_serves_tunnels_on_the_socket_systemd_made(processes, echo_service, tmp_path):
    socket_unit = read_unit(SYSTEMD / "spore-server.socket")["Socket"]
    (service,) = socket_unit["Service"]
    (listen,) = socket_unit["ListenStream"]
    argv = exec_start(service, tmp_path)
    # The socket's family must be the one --listen adopts it as.
    domain = "INET6" if listen.startswith("[") or ":" not in listen else "INET"
    assert f"systemd:domain={domain}:" in " ".join(argv), (listen, argv)
    # Twisted (like sd_listen_fds) wants LISTEN_FDNAMES; systemd defaults it to the socket unit's name.
    (name,) = socket_unit.get("FileDescriptorName", ["spore-server.socket"])
    write_server_config(tmp_path)

    server = processes.start(sys.executable, "-c", ACTIVATE, name, *argv)
    given_port = int(server.wait_for(r"^(\d+)\n").group(1))
    control_port = int(server.wait_for(SERVER_LISTENING, stream="stderr").group(1))
    assert control_port == given_port, "the server listened on a socket of its own"
    carries_a_tunnel(processes, echo_service, control_port)


def test_local_template_unit_opens_the_tunnel_its_instance_names(processes, echo_service, tmp_path):
    _, control_port = processes.server("--min-port", str(MIN_PORT), "--max-port", str(MAX_PORT))
    config = example("local-example.json") | {
        "local_port": echo_service.port,
        "local_host": "127.0.0.1",
        "to": "127.0.0.1",
        "control_port": control_port,
    }
    (tmp_path / "local-example.json").write_text(json.dumps(config))
    argv = exec_start("spore-local@.service", tmp_path, instance="example")
    assert str(tmp_path / "local-example.json") in argv

    local = processes.start(*argv)
    public_port = int(local.wait_for(LISTENING_AT).group(1))
    assert_echoes(public_port)


SANDBOX = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "Restart": "on-failure",
}


@pytest.mark.parametrize("unit", SERVICES)
def test_service_units_are_sandboxed_and_restart(unit):
    service = read_unit(SYSTEMD / unit)["Service"]
    for key, value in SANDBOX.items():
        assert service.get(key) == [value], f"{unit}: {key}={service.get(key)}"
    assert set(service["RestrictAddressFamilies"][0].split()) <= {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "AmbientCapabilities" not in service, "capabilities belong in the low-ports drop-in only"
    assert service["RestartPreventExitStatus"] == ["2"], "exit 2 is a bad config: restarting cannot help"


def test_both_server_units_share_one_sandbox():
    def settings(unit: str) -> dict:
        service = dict(read_unit(SYSTEMD / unit)["Service"])
        del service["ExecStart"]
        return service

    assert settings("spore-server.service") == settings("spore-server-activated.service")
    limit = read_unit(SYSTEMD / "spore-server.service")["Service"]["LimitNOFILE"]
    assert int(limit[0]) >= 65536


def test_low_ports_drop_in_grants_only_binding_low_ports():
    drop_in = read_unit(SYSTEMD / "spore-server.service.d" / "low-ports.conf")
    assert drop_in == {
        "Service": {
            "AmbientCapabilities": ["CAP_NET_BIND_SERVICE"],
            "CapabilityBoundingSet": ["CAP_NET_BIND_SERVICE"],
        }
    }


@pytest.fixture
def installed_units(tmp_path) -> Path:
    """deploy/systemd with /opt/spore/bin pointing at this Python's bin: systemd-analyze checks it exists."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    units = tmp_path / "systemd"
    shutil.copytree(SYSTEMD, units)
    for path in units.rglob("*"):
        if path.is_file():
            path.write_text(path.read_text().replace("/opt/spore/bin/", f"{BIN}/"))
    return units


def systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
    )


def test_systemd_analyze_verify_accepts_every_unit(installed_units):
    names = [*SERVICES, "spore-server.socket"]
    # Drop-ins in spore-server.service.d/ next to the unit are read too.
    result = systemd_analyze("verify", "--man=no", *(f"./{name}" for name in names), cwd=installed_units)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.parametrize("unit", SERVICES)
def test_systemd_analyze_security_rates_the_sandbox_ok(installed_units, unit):
    result = systemd_analyze("security", "--offline=yes", f"./{unit}", cwd=installed_units)
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze has no offline security review: {result.stderr.strip()}")
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert exposure, result.stdout + result.stderr
    assert float(exposure.group(1)) <= 2.0, result.stdout  # systemd calls up to 2.0 "OK"


# --- Docker ----------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    instructions, logical = [], ""
    for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        line, logical = (logical + line).strip(), ""
        if line:
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def instruction(name: str) -> str:
    found = [rest for word, rest in dockerfile() if word == name]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def test_dockerfile_runs_as_a_user_on_a_slim_python():
    assert re.fullmatch(r"python:3\.1[1-9]-slim", dockerfile()[0][1]), dockerfile()[0]
    user = instruction("USER").split(":")[0]
    assert user not in ("root", "0"), user
    assert any(word == "RUN" and "pip install --no-cache-dir ." in rest for word, rest in dockerfile())
    assert "7835" in instruction("EXPOSE").split()
    for word, rest in dockerfile():
        if word == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the build context (the repo's root)"


def test_docker_context_keeps_what_the_build_needs():
    ignore = DEPLOY / "docker" / "Dockerfile.dockerignore"
    patterns = [line for line in ignore.read_text().splitlines() if line and not line.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "LICENSE", "spore/server.py", "twisted/plugins",
                   "deploy/config/server.json"):
        parts = Path(needed).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        assert not any(fnmatch(p, pattern) for p in prefixes for pattern in patterns), needed


def test_docker_command_serves_and_its_healthcheck_tells_up_from_down(processes, tmp_path):
    command = json.loads(instruction("CMD"))
    assert command[0] == "spore", command
    argv = [executable("spore"), *(host_paths(arg, tmp_path) for arg in command[1:])]
    # The image holds deploy/config/server.json at /etc/spore/server.json.
    write_server_config(tmp_path)
    server = processes.start(*argv)
    control_port = int(server.wait_for(SERVER_LISTENING, stream="stderr").group(1))

    check = re.fullmatch(r"(?:--\S+\s+)*CMD\s+(\[.*\])", instruction("HEALTHCHECK"))
    assert check, instruction("HEALTHCHECK")
    probe = json.loads(check.group(1))
    assert probe[0] == "python", "slim images have Python, not curl"
    assert f"'{example('server.json')['control_port']}'" in probe[-1], "the probe's default is not the control port"

    def healthcheck(port: int) -> int:
        return subprocess.run(
            [sys.executable, *probe[1:]], check=False, env={**os.environ, "SPORE_CONTROL_PORT": str(port)},
            capture_output=True, timeout=TIMEOUT,
        ).returncode

    assert healthcheck(control_port) == 0
    assert healthcheck(closed_port()) != 0
    assert server.popen.poll() is None


# --- Prometheus --------------------------------------------------------------


def load_yaml(path: Path) -> list:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the Kubernetes and Prometheus files")
    return list(yaml.safe_load_all(path.read_text()))


def scraped_names(text: str) -> set[str]:
    """Every series name a /metrics page declares or shows (a labelled counter with no sample yet is declared)."""
    names = set(re.findall(r"(?m)^# TYPE (\S+)", text))
    names |= set(re.findall(r"(?m)^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text))
    for name in re.findall(r"(?m)^# TYPE (\S+) histogram$", text):
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def alert_rules() -> list[dict]:
    (document,) = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert rules and all({"alert", "expr"} <= rule.keys() for rule in rules)
    return rules


def test_alert_rules_use_only_metrics_a_server_serves(processes):
    server, _ = processes.server("--metrics", "tcp:0:interface=127.0.0.1")
    metrics_port = int(server.wait_for(METRICS_LISTENING, stream="stderr").group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=TIMEOUT) as page:
        served = scraped_names(page.read().decode())

    used = {name for rule in alert_rules() for name in re.findall(r"\bspore_\w+", rule["expr"])}
    assert {"spore_tunnels_active", "spore_connections_stale_total", "spore_auth_failures_total",
            "spore_connections_refused_total", "spore_connections_shed_total", "spore_visitors_pending",
            "spore_accept_latency_ms_bucket"} <= used
    assert used <= served, f"not served: {sorted(used - served)}"


def test_prometheus_scrapes_the_jobs_the_down_alert_watches():
    (config,) = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    (down,) = [rule for rule in alert_rules() if re.match(r"up\b", rule["expr"])]
    watched = re.search(r'job=~"([^"]+)"', down["expr"]).group(1)
    assert all(re.fullmatch(watched, job) for job in jobs), (watched, jobs)
    # The static targets use the metrics port of the example config.
    targets = [t for job in config["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]]
    assert targets and all(t.endswith(f":{example('server.json')['metrics_port']}") for t in targets)


# --- Kubernetes ---------------------------------------------------------------


def kubernetes() -> dict[str, dict]:
    return {document["kind"]: document for document in load_yaml(DEPLOY / "kubernetes" / "spore.yaml")}


def test_kubernetes_servers_own_disjoint_port_ranges(tmp_path):
    objects = kubernetes()
    statefulset, service = objects["StatefulSet"], objects["Service"]
    pod = statefulset["spec"]["template"]
    assert pod["spec"]["hostNetwork"] is True
    assert service["spec"]["clusterIP"] == "None", "a balancing Service would split a client from its tunnel"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    settings = json.loads(objects["ConfigMap"]["data"]["server.json"])
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(settings["metrics_port"])
    assert pod["spec"]["securityContext"]["runAsUser"] == int(instruction("USER").split(":")[0])

    # The container's command, run for each pod with a stand-in 'spore' that prints its arguments.
    stub = tmp_path / "bin" / "spore"
    stub.parent.mkdir()
    stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    etc = tmp_path / "etc"
    (etc / "secrets").mkdir(parents=True)
    (etc / "secrets" / "secrets").write_text("a-secret\n")
    (etc / "server.json").write_text(host_paths(objects["ConfigMap"]["data"]["server.json"], etc))
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/etc/spore/server.json", str(Path(settings["secret_file"]).parent)} <= mounts

    ranges = []
    for n in range(statefulset["spec"]["replicas"]):
        result = subprocess.run(
            [*container["command"], *container["args"]], check=False, capture_output=True, text=True, timeout=TIMEOUT,
            env={"PATH": f"{stub.parent}:/usr/bin:/bin", "POD_NAME": f"{statefulset['metadata']['name']}-{n}"},
        )
        assert result.returncode == 0, result.stderr
        argv = [host_paths(arg, etc) for arg in json.loads(result.stdout)]
        assert argv[0] == "server", argv
        options = server_tap.Options()
        options.environ = {}
        try:
            options.parseOptions(argv[1:])
        except usage.UsageError as e:
            pytest.fail(f"spore-{n}: {e}")
        ranges.append((options.settings.min_port, options.settings.max_port))

    ranges.sort()
    assert all(low <= high for low, high in ranges)
    assert all(high < next_low for (_, high), (next_low, _) in pairwise(ranges)), ranges
    ports = [port["containerPort"] for port in container["ports"]]
    for low, high in ranges:
        assert 1024 <= low and high < 32768, f"{low}-{high} reaches into Linux's ephemeral ports"
        assert not any(low <= port <= high for port in ports), f"{low}-{high} holds the node's {ports}"
