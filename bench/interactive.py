#!/usr/bin/env python3
"""Interactive traffic through a TCP tunnel: small requests, small replies, one at a time.

A database client, an SSH session or a game sends a small request and waits
for the small reply before it sends the next.  This measures transactions per
second of that traffic straight to a local service ("direct") and through a
tunnel, in two modes:

  held            --clients connections (default 8) open at once, each held
                  for the whole run; a transaction is one round trip, and each
                  client starts the next as soon as its reply is complete
  per_connection  --clients clients at once; a transaction opens a new
                  connection, does --round-trips round trips (default 3) on it
                  and closes it

A request is 64 bytes (client number, connection number, sequence number,
padding); the service answers each whole request with it four times over
(256 bytes), and every reply is compared byte for byte with what was sent.  A
wrong, cut-off or refused reply counts as an error, and so does a round trip
or a connect that waits longer than 1 s for its answer; a held client that
fails stops, a per_connection client opens its next connection.

All the clients are driven from one selectors loop in this process
(non-blocking sockets, TCP_NODELAY), so the load generator costs the same for
every tunnel.  The service is one selectors loop in a child process
(``interactive.py --serve``).  Runs alternate direct and tunnel, taking turns at
going first, --reps times (default 5, --quick 3), each lasting --seconds
(default 4, --quick 2); the figures are medians.  --modes picks the modes.

A tunnel run also records the CPU time (user and system, from /proc) each
tunnel process spent per transaction: the rate moves with whatever else the
machine is doing, the CPU a transaction costs much less.

The tunnel is started from command templates, as ../shared/bench/tunnel_bench.py
does: ``{local_port}`` and ``{local_host}`` stand for the service's port and
127.0.0.1, the public port is read from the client's output (``listening at
HOST:PORT``).  The server is ready when its output matches --server-ready-regex
(default "listening", 10 s at most); a client that exits before it names the
port is started again (5 tries in 20 s at most).  A tunnel server's control
port is fixed, so run it in a private network namespace:

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/interactive.py --quick \\
        --server-cmd ".venv/bin/spore server --min-port 20000 --max-port 29999" \\
        --client-cmd ".venv/bin/spore local {local_port} --to 127.0.0.1 -l 127.0.0.1"'

Output: a table, then one line of JSON, ``{"summary": {"held": {"direct_tps",
"tunnel_tps", "ratio", ...}, "per_connection": {...}}, "errors": [...]}``;
``--out FILE`` writes that with every run and the configuration added.  The
exit status is 1 if the tunnel could not be started or any transaction failed.
A --quick run takes about 25 s, the default one about 90 s.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import re
import selectors
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REQUEST_BYTES = 64
REPLY_FACTOR = 4  # the service answers a request with it repeated this many times
HEADER = struct.Struct("!IIQ")  # client number, connection number, sequence number
PADDING = b"." * (REQUEST_BYTES - HEADER.size)
STALL_S = 1.0  # a round trip or connect waiting longer than this is an error
MAX_ERRORS = 50  # a run stops after this many
MAX_WAKEUPS = 10**8  # count bound on every event loop (each is also bounded in time)
SERVICE_MAX_S = 3600.0
MODES = ("held", "per_connection")
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def die_with_parent() -> None:
    """Run in a child before exec: the kernel sends it SIGTERM if this process dies (Linux)."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------
# The service, in a process of its own (interactive.py --serve).
# --------------------------------------------------------------------------


class _Peer:
    """One connection to the service: the part of a request not yet whole, the reply not yet sent."""

    __slots__ = ("out", "partial", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.partial, self.out = sock, b"", b""


def _answer(peer: _Peer, data: bytes) -> bytes:
    """The reply to every whole request in what has arrived."""
    data = peer.partial + data if peer.partial else data
    whole = len(data) - len(data) % REQUEST_BYTES
    peer.partial = data[whole:]
    if whole == REQUEST_BYTES:
        return data[:whole] * REPLY_FACTOR
    return b"".join(data[i:i + REQUEST_BYTES] * REPLY_FACTOR for i in range(0, whole, REQUEST_BYTES))


def _serve() -> None:
    """A selectors loop doing as little as it can per request; stops when stdin closes."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(1024)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, READ)
    sel.register(sys.stdin, READ)  # the benchmark holds our stdin: when it goes, so do we
    print("PORT", listener.getsockname()[1], flush=True)

    def close(peer: _Peer) -> None:
        sel.unregister(peer.sock)
        peer.sock.close()

    def flush(peer: _Peer, waiting: bool) -> None:
        """Send what we can; watch for writability only while something is left (``waiting``: we were)."""
        try:
            peer.out = peer.out[peer.sock.send(peer.out):]
        except BlockingIOError:
            pass
        except OSError:
            close(peer)
            return
        if bool(peer.out) != waiting:
            sel.modify(peer.sock, READ | WRITE if peer.out else READ, peer)

    end = time.monotonic() + SERVICE_MAX_S
    for _ in range(MAX_WAKEUPS):
        if time.monotonic() > end:
            return
        for key, events in sel.select(1.0):
            if key.fileobj is sys.stdin:
                if not os.read(sys.stdin.fileno(), 4096):
                    return
            elif key.fileobj is listener:
                for _ in range(64):
                    try:
                        sock, _ = listener.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(sock, READ, _Peer(sock))
            elif events & WRITE:
                flush(key.data, True)
            else:
                peer = key.data
                try:
                    data = peer.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    close(peer)
                    continue
                reply = _answer(peer, data)
                if reply and not peer.out:
                    peer.out = reply
                    flush(peer, False)
                elif reply:
                    peer.out += reply  # our clients wait for each reply: this is never much


class Service:
    """The service's process; ``port`` is where it listens."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (no threads here)
        )
        with selectors.DefaultSelector() as sel:
            sel.register(self.popen.stdout, READ)
            line = self.popen.stdout.readline() if sel.select(10) else ""
        if not line.startswith("PORT "):
            raise TunnelError(f"the local service did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.popen.stdin.close()
        try:
            self.popen.wait(3)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(3)


# --------------------------------------------------------------------------
# The tunnel's server and client.
# --------------------------------------------------------------------------


class TunnelError(Exception):
    """The service or the tunnel could not be started."""


class Program:
    """A command in a session of its own; its stdout and stderr go to one file in ``logdir``."""

    def __init__(self, name: str, cmd: str, logdir: str) -> None:
        self.path = os.path.join(logdir, f"{name}.log")
        with open(self.path, "wb") as log:
            try:
                self.popen = subprocess.Popen(
                    shlex.split(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509 (no threads here)
                )
            except OSError as e:
                raise TunnelError(f"cannot run {cmd!r}: {e}") from e

    def text(self) -> str:
        with open(self.path, "rb") as f:
            return ANSI.sub("", f.read().decode(errors="replace"))

    def tail(self) -> str:
        return self.text()[-1500:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for(self, regex: str, timeout: float) -> re.Match | None:
        """The first match of ``regex`` in the output, waiting up to ``timeout`` s or until the program exits."""
        end = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 2):
            exited = not self.alive()
            found = re.search(regex, self.text())
            if found or exited or time.monotonic() > end:
                return found
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is not None:
                return
            try:
                os.killpg(self.popen.pid, sig)
            except OSError:
                pass
            try:
                self.popen.wait(3)
            except subprocess.TimeoutExpired:
                continue


def start_tunnel(args: argparse.Namespace, service_port: int, logdir: str,
                 programs: list[Program]) -> tuple[Program, Program, int]:
    """Start the server, then the client (again if it gives up early); the two and the public port.

    Each program started is added to ``programs`` at once, for the caller to stop."""
    fmt = {"local_port": service_port, "local_host": HOST}
    server = Program("server", args.server_cmd.format(**fmt), logdir)
    programs.append(server)
    ready = not args.server_ready_regex or server.wait_for(args.server_ready_regex, 10)
    if not server.alive():
        raise TunnelError(f"the tunnel server exited ({server.popen.returncode}); its output:\n{server.tail()}")
    if not ready:
        raise TunnelError(f"the tunnel server is not ready after 10 s; its output:\n{server.tail()}")
    deadline = time.monotonic() + 20
    for attempt in range(5):
        client = Program(f"client{attempt}", args.client_cmd.format(**fmt), logdir)
        programs.append(client)
        found = client.wait_for(args.port_regex, max(1.0, deadline - time.monotonic()))
        if found:
            return server, client, int(found.group(1))
        if client.alive() or time.monotonic() > deadline:
            break  # running but silent: another try would not help
        time.sleep(0.5)  # it gave up, perhaps before the server was listening: try again
    raise TunnelError(f"no public port in the tunnel client's output; it said:\n{client.tail()}")


# --------------------------------------------------------------------------
# The load: every client in one selectors loop.
# --------------------------------------------------------------------------


class ClientError(Exception):
    """A transaction failed: a wrong or missing reply, a refused or reset connection."""


class Client:
    """One simulated user: its connection, the request in flight and the reply it expects."""

    __slots__ = ("conns", "expect", "got", "mask", "num", "out", "seq", "sock", "t_conn", "t_sent", "trips")

    def __init__(self, num: int) -> None:
        self.num, self.sock, self.conns, self.seq, self.trips = num, None, 0, 0, 0
        self.expect = self.got = self.out = b""
        self.mask, self.t_sent, self.t_conn = 0, 0.0, 0.0

    def connect(self, sel: selectors.BaseSelector, port: int) -> None:
        """Start a non-blocking connect; ``on_event`` sends the first request once it completes."""
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns += 1
        self.trips = 0
        self.t_conn = self.t_sent = time.perf_counter()
        self.expect = b""
        code = self.sock.connect_ex((HOST, port))
        if code not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise ClientError(f"connect: {os.strerror(code)}")
        self.mask = WRITE
        sel.register(self.sock, WRITE, self)

    def send_request(self, sel: selectors.BaseSelector) -> None:
        self.seq += 1
        self.out = HEADER.pack(self.num, self.conns, self.seq) + PADDING
        self.expect, self.got = self.out * REPLY_FACTOR, b""
        self.t_sent = time.perf_counter()
        self.flush(sel)

    def flush(self, sel: selectors.BaseSelector) -> None:
        try:
            self.out = self.out[self.sock.send(self.out):]
        except BlockingIOError:
            pass
        except OSError as e:
            raise ClientError(f"send: {e}") from e
        mask = READ | WRITE if self.out else READ
        if mask != self.mask:
            sel.modify(self.sock, mask, self)
            self.mask = mask

    def on_event(self, sel: selectors.BaseSelector, events: int) -> float | None:
        """Handle readiness; return the round trip's seconds when a whole, correct reply is in."""
        if not self.expect:  # the connect finished
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise ClientError(f"connect: {os.strerror(code)}")
            self.send_request(sel)
            return None
        if events & WRITE and self.out:
            self.flush(sel)
        if not events & READ:
            return None
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError as e:
            raise ClientError(f"recv: {e}") from e
        if not data:
            raise ClientError(f"connection closed after {len(self.got)} of {len(self.expect)} reply bytes")
        self.got += data
        if len(self.got) < len(self.expect):
            return None
        if self.got != self.expect:
            raise ClientError(f"wrong reply to request {self.seq} on connection {self.conns}")
        return time.perf_counter() - self.t_sent

    def close(self, sel: selectors.BaseSelector) -> None:
        if self.sock is not None:
            sel.unregister(self.sock)
            self.sock.close()
            self.sock = None


def blocking_round_trip(sock: socket.socket, request: bytes, timeout: float) -> None:
    """Send ``request`` and check the whole reply, on a blocking socket, within ``timeout`` s."""
    sock.settimeout(timeout)
    end = time.monotonic() + timeout
    sock.sendall(request)
    want, got = request * REPLY_FACTOR, b""
    for _ in range(len(want)):  # each recv brings at least one byte
        if len(got) >= len(want) or time.monotonic() > end:
            break
        data = sock.recv(65536)
        if not data:
            break
        got += data
    if got != want:
        raise ClientError(f"wrong first reply ({len(got)} of {len(want)} bytes)")


def open_held(port: int, n: int, errors: list[str]) -> list[Client]:
    """Open ``n`` connections and do one round trip on each (not timed), so the run only holds them."""
    clients = []
    for num in range(n):
        client = Client(num)
        try:
            client.sock = socket.create_connection((HOST, port), timeout=5)
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.conns = client.seq = 1
            blocking_round_trip(client.sock, HEADER.pack(num, 1, 1) + PADDING, 5)
            client.sock.setblocking(False)
            clients.append(client)
        except (OSError, ClientError) as e:
            errors.append(f"client {num}: opening: {e}")
            if client.sock is not None:
                client.sock.close()
    return clients


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_load(mode: str, port: int, n: int, seconds: float, round_trips: int) -> dict:
    """One run: ``n`` clients for ``seconds``; transactions per second, their latency, the errors."""
    errors: list[str] = []
    latencies: list[float] = []
    sel = selectors.DefaultSelector()
    held = mode == "held"
    clients = open_held(port, n, errors) if held else [Client(num) for num in range(n)]

    def restart(client: Client) -> None:
        """Start a client's next transaction."""
        if held:
            client.send_request(sel)
        else:
            client.connect(sel, port)

    def fail(client: Client, why: str) -> None:
        """Count the error; a per_connection client starts afresh, a held one stays out."""
        errors.append(f"client {client.num}: {why}")
        client.close(sel)
        if not held:
            try:
                restart(client)
            except ClientError as e:
                errors.append(f"client {client.num}: {e}")

    def reply_in(client: Client, rtt: float) -> None:
        client.trips += 1
        if held:
            latencies.append(rtt)
        elif client.trips == round_trips:
            latencies.append(time.perf_counter() - client.t_conn)
            client.close(sel)
        else:
            client.send_request(sel)
            return
        restart(client)

    start = time.perf_counter()
    for client in clients:
        if held:
            sel.register(client.sock, READ, client)
            client.mask = READ
        try:
            restart(client)
        except ClientError as e:
            fail(client, str(e))
    end = start + seconds
    next_check = start + 0.25
    for _ in range(MAX_WAKEUPS):
        now = time.perf_counter()
        if now >= end or not sel.get_map() or len(errors) >= MAX_ERRORS:
            break
        if now >= next_check:
            next_check = now + 0.25
            for client in clients:
                if client.sock is not None and now - client.t_sent > STALL_S:
                    fail(client, f"no {'reply' if client.expect else 'connection'} within {STALL_S:g} s")
        for key, events in sel.select(min(0.25, end - now)):
            client = key.data
            try:
                rtt = client.on_event(sel, events)
                if rtt is not None:
                    reply_in(client, rtt)
            except ClientError as e:
                fail(client, str(e))
    wall = time.perf_counter() - start
    for client in clients:
        client.close(sel)
    sel.close()
    return {
        "transactions": len(latencies), "seconds": round(wall, 3), "tps": round(len(latencies) / wall, 1),
        "p50_ms": ms(percentile(latencies, 0.5)), "p99_ms": ms(percentile(latencies, 0.99)),
        "errors": len(errors), "first_errors": errors[:5],
    }


def ms(seconds: float | None) -> float | None:
    return round(seconds * 1e3, 4) if seconds is not None else None


# --------------------------------------------------------------------------
# Runs, summary, report.
# --------------------------------------------------------------------------


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def ratio(a, b) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc), or 0 where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace, targets: dict[str, int], reps: int, seconds: float, result: dict,
            tunnel_pids: dict[str, int]) -> None:
    """Every mode, ``reps`` times direct and tunnel, taking turns at going first.

    A tunnel run also records the CPU time each tunnel process spent per
    transaction: a yardstick that the machine's other load moves less than
    it moves the rate."""
    for mode in args.modes:
        runs = result["runs"][mode]
        for rep in range(reps):
            for name in ("direct", "tunnel") if rep % 2 == 0 else ("tunnel", "direct"):
                before = {side: cpu_seconds(pid) for side, pid in tunnel_pids.items()}
                run = run_load(mode, targets[name], args.clients, seconds, args.round_trips)
                if name == "tunnel" and run["transactions"]:
                    for side, pid in tunnel_pids.items():
                        run[f"{side}_cpu_us_per_tx"] = round(
                            (cpu_seconds(pid) - before[side]) * 1e6 / run["transactions"], 1)
                runs[name].append(run)
                if run["errors"]:
                    result["errors"].append(
                        f"{mode} {name} run {rep + 1}: {run['errors']} errors, first: {run['first_errors'][0]}")


def summarize(runs: dict) -> dict:
    summary = {}
    for mode, sides in runs.items():
        if not sides["direct"] and not sides["tunnel"]:
            continue
        direct = median([r["tps"] for r in sides["direct"]])
        tunnel = median([r["tps"] for r in sides["tunnel"]])
        summary[mode] = {
            "direct_tps": direct, "tunnel_tps": tunnel, "ratio": ratio(tunnel, direct),
            "direct_p50_ms": median([r["p50_ms"] for r in sides["direct"]]),
            "tunnel_p50_ms": median([r["p50_ms"] for r in sides["tunnel"]]),
            "errors": sum(r["errors"] for side in sides.values() for r in side),
        }
        for side in ("server", "client"):
            summary[mode][f"{side}_cpu_us_per_tx"] = median([r.get(f"{side}_cpu_us_per_tx") for r in sides["tunnel"]])
    return summary


def table(summary: dict, config: dict) -> str:
    title = (f"interactive traffic: {config['clients']} clients, {REQUEST_BYTES}-byte requests, "
             f"{REQUEST_BYTES * REPLY_FACTOR}-byte replies, {config['reps']} runs of {config['seconds']:g} s "
             f"each way (medians); per_connection = {config['round_trips']} round trips per connection")
    columns = (f"{'mode':<16}{'direct tx/s':>13}{'tunnel tx/s':>13}{'tunnel/direct':>15}"
               f"{'direct p50 ms':>15}{'tunnel p50 ms':>15}{'errors':>8}{'CPU us/tx server':>18}{'client':>8}")
    lines = [title, columns]
    for mode, s in summary.items():
        cells = [s["direct_tps"], s["tunnel_tps"], s["ratio"], s["direct_p50_ms"], s["tunnel_p50_ms"]]
        text = ["-" if v is None else f"{v:.0f}" if i < 2 else f"{v:.3f}" for i, v in enumerate(cells)]
        cpu = ["-" if s[k] is None else f"{s[k]:.0f}" for k in ("server_cpu_us_per_tx", "client_cpu_us_per_tx")]
        lines.append(f"{mode:<16}{text[0]:>13}{text[1]:>13}{text[2]:>15}{text[3]:>15}{text[4]:>15}{s['errors']:>8}"
                     f"{cpu[0]:>18}{cpu[1]:>8}")
    return "\n".join(lines)


def exit_on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)  # so that the finally clauses stop what was started


def main() -> int:
    if sys.argv[1:] == ["--serve"]:
        _serve()
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-cmd", required=True, help="tunnel server command template")
    parser.add_argument("--client-cmd", required=True,
                        help="tunnel client command template ({local_port}, {local_host})")
    parser.add_argument("--port-regex", default=r"listening at [^\s:]+:(\d+)",
                        help="regex on the client's output; group 1 is the public port (default %(default)r)")
    parser.add_argument("--server-ready-regex", default="listening",
                        help="regex on the server's output meaning it is ready ('' for none; default %(default)r)")
    parser.add_argument("--quick", action="store_true", help="3 runs of 2 s each way: about 25 s")
    parser.add_argument("--reps", type=int, help="runs of each mode, each direct and tunnel (default 5, quick 3)")
    parser.add_argument("--seconds", type=float, help="length of one run (default 4, quick 2)")
    parser.add_argument("--clients", type=int, default=8, help="clients at once (default 8)")
    parser.add_argument("--round-trips", type=int, default=3,
                        help="round trips per connection in per_connection (default 3)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of %(default)s")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON, with every run, here")
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes a comma list of {', '.join(MODES)}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_on_signal)

    reps = args.reps or (3 if args.quick else 5)
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    config = {"server_cmd": args.server_cmd, "client_cmd": args.client_cmd, "clients": args.clients, "reps": reps,
                  "seconds": seconds, "round_trips": args.round_trips, "request_bytes": REQUEST_BYTES,
                  "reply_bytes": REQUEST_BYTES * REPLY_FACTOR, "stall_s": STALL_S, "cpus": os.cpu_count()}
    result: dict = {"config": config, "runs": {m: {"direct": [], "tunnel": []} for m in MODES}, "errors": []}
    logdir = tempfile.mkdtemp(prefix="interactive-")
    service = None
    programs: list[Program] = []
    started = time.monotonic()
    try:
        service = Service()
        server, client, public = start_tunnel(args, service.port, logdir, programs)
        config.update(service_port=service.port, public_port=public)
        measure(args, {"direct": service.port, "tunnel": public}, reps, seconds, result,
                {"server": server.popen.pid, "client": client.popen.pid})
        if not (server.alive() and client.alive()):
            result["errors"].append("the tunnel server or client exited during the runs")
    except TunnelError as e:
        result["errors"].append(f"fatal: {e}")
    finally:
        for program in reversed(programs):
            program.stop()
        if service is not None:
            service.stop()
        for name in os.listdir(logdir):
            os.unlink(os.path.join(logdir, name))
        os.rmdir(logdir)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["summary"] = summarize(result["runs"])
    if result["summary"]:
        print(table(result["summary"], config))
    print(json.dumps({"summary": result["summary"], "errors": result["errors"]}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started has been stopped
        sys.exit(130)
