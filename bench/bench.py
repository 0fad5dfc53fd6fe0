#!/usr/bin/env python3
"""Spore's loopback benchmark: the same traffic straight to a service and through a tunnel.

One command starts a local echo/sink service, a ``spore server`` and a
``spore local`` exposing that service, all on 127.0.0.1 with ports the system
picks, and measures, alternating direct and tunnelled runs so that machine
noise cancels in the ratios:

  throughput   one stream of bytes into a sink that counts them (for the
               ratio), then into one that returns their sha256
  sequential   one connection at a time: connect, 1 byte out, 1 byte back
  concurrent   50 clients at once, each connection echoing 32 random bytes
  idle         RSS of server and client before and after holding N idle
               tunnelled connections

Every byte is checked: the throughput digest, each echoed payload's digest.
``--hold N`` opens N tunnelled connections at once, checks each of them twice
and reports what the processes held and what failed.  The result is a table on
standard output followed by one line of JSON.

Standard library only; it knows Spore only by its command line.  Run it in a
private network namespace so that nothing else on the machine is touched:

    unshare -n sh -c 'ip link set lo up; python3 bench/bench.py --quick'
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
SINK, COUNT = b"S", b"C"  # first byte of a connection: sink with sha256, or sink counting only
REPLY = struct.Struct("!Q32s")  # what a sink answers after the sender's FIN: byte count, digest
BLOCK = 1 << 20
PAYLOAD = 32  # bytes echoed per connection in the concurrent run

TARGETS = {  # the performance issue's targets, tunnel/direct unless said otherwise
    "throughput": ("ratio", ">=", 0.25),
    "seq_conn_per_s": ("ratio", ">=", 0.25),
    "seq_p50": ("ratio", "<=", 4.0),
    "conc_conn_per_s": ("ratio", ">=", 0.65),
    "idle_server_kb": ("value", "<=", 28.0),
    "idle_client_kb": ("value", "<=", 28.0),
}


# --------------------------------------------------------------------------
# The local service, in a process of its own (bench.py --service).
# --------------------------------------------------------------------------


class _Peer:
    """One connection to the service: an echo, or a sink if its first byte says so."""

    __slots__ = ("sock", "mode", "count", "digest", "out")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.mode, self.count, self.digest, self.out = sock, None, 0, None, b""


def _serve() -> None:
    """A selectors loop: the least work per connection, so that direct runs are as fast as they can be."""
    raise_nofile()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(4096)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(sys.stdin, selectors.EVENT_READ)  # the benchmark holds our stdin: when it goes, so do we
    print("PORT", listener.getsockname()[1], flush=True)
    buffer = memoryview(bytearray(BLOCK))

    def close(peer: _Peer) -> None:
        sel.unregister(peer.sock)
        peer.sock.close()

    def send(peer: _Peer, data: bytes) -> None:
        if not peer.out:
            try:
                data = data[peer.sock.send(data):]
            except BlockingIOError:
                pass
            except OSError:
                data = b""
            if data:
                sel.modify(peer.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, peer)
        peer.out += data

    while True:
        for key, events in sel.select():
            if key.fileobj is sys.stdin:
                if not os.read(sys.stdin.fileno(), 4096):
                    return
                continue
            if key.fileobj is listener:
                for _ in range(256):
                    try:
                        sock, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(sock, selectors.EVENT_READ, _Peer(sock))
                continue
            peer: _Peer = key.data
            if events & selectors.EVENT_WRITE:
                try:
                    peer.out = peer.out[peer.sock.send(peer.out):]
                except BlockingIOError:
                    pass
                except OSError:
                    peer.out = b""
                if not peer.out:
                    sel.modify(peer.sock, selectors.EVENT_READ, peer)
                    if peer.mode == b"closing":
                        close(peer)
                continue
            if not events & selectors.EVENT_READ or peer.mode == b"closing":
                continue
            try:
                n = peer.sock.recv_into(buffer)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            data = buffer[:n]
            if peer.mode is None and n:
                first = bytes(data[:1])
                peer.mode = first if first in (SINK, COUNT) else b"E"
                if peer.mode != b"E":
                    data = data[1:]
                    peer.digest = hashlib.sha256() if peer.mode == SINK else None
            if n == 0:  # the sender's FIN
                if peer.mode in (SINK, COUNT):
                    digest = peer.digest.digest() if peer.digest is not None else bytes(32)
                    send(peer, REPLY.pack(peer.count, digest))
                if peer.out:
                    peer.mode = b"closing"  # close once the rest has gone
                else:
                    close(peer)
            elif peer.mode == b"E":
                send(peer, bytes(data))
            else:
                peer.count += len(data)
                if peer.digest is not None:
                    peer.digest.update(data)


# --------------------------------------------------------------------------
# Processes and what /proc says about them.
# --------------------------------------------------------------------------


def raise_nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether some socket listens on 127.0.0.1:port (from /proc, without connecting to it)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            return any(line.split()[1] == want and line.split()[3] == "0A" for line in list(f)[1:])
    except OSError:
        return False


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def rss_kb(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
            fields = stat[stat.rfind(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def nofile_limit(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        return "/".join(line.split()[3:5])  # soft/hard
    except (OSError, StopIteration):
        return None


class Program:
    """A started command; its stdout and stderr go to files in ``logdir``."""

    def __init__(self, name: str, argv: list[str], logdir: str) -> None:
        self.name, self.argv = name, argv
        self.out_path = os.path.join(logdir, f"{name}.out")
        self.err_path = os.path.join(logdir, f"{name}.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        self.pid = self.popen.pid

    def read(self, which: str = "err") -> str:
        try:
            with open(self.out_path if which == "out" else self.err_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_lines(self) -> int:
        return self.read("err").count("\n")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> int | None:
        # SIGINT first: Twisted stops its reactor cleanly, and a profiler writes its file.
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 3), (signal.SIGKILL, 3)):
            if self.popen.poll() is not None:
                break
            try:
                os.killpg(self.pid, sig)
            except OSError:
                pass
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.popen.poll()


class Service:
    def __init__(self) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--service"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.popen.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the local service did not start: {line!r}")
        self.port = int(line.split()[1])
        self.pid = self.popen.pid

    def stop(self) -> None:
        self.popen.stdin.close()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


# --------------------------------------------------------------------------
# The measurements.  Each is bounded in count and in time.
# --------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


_expected: dict[int, bytes] = {}


def expected_digest(block: bytes, nbytes: int) -> bytes:
    if nbytes not in _expected:
        h = hashlib.sha256()
        for _ in range(nbytes // len(block)):
            h.update(block)
        h.update(block[: nbytes % len(block)])
        _expected[nbytes] = h.digest()
    return _expected[nbytes]


def throughput(port: int, block: bytes, nbytes: int, max_s: float, digest: bool) -> dict:
    """Send ``nbytes`` (the block over and over) into a sink; its answer checks every byte."""
    view = memoryview(block)
    t0 = time.perf_counter()
    end = time.monotonic() + max_s
    sent, error, reply = 0, None, b""
    try:
        with socket.create_connection((HOST, port), timeout=10) as s:
            s.settimeout(max_s + 10)
            s.sendall(SINK if digest else COUNT)
            while sent < nbytes and time.monotonic() < end:
                n = min(len(block), nbytes - sent)
                s.sendall(view[:n])
                sent += n
            s.shutdown(socket.SHUT_WR)
            while len(reply) < REPLY.size:
                chunk = s.recv(REPLY.size - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError as e:
        error = repr(e)
    seconds = time.perf_counter() - t0
    result = dict(bytes=sent, seconds=round(seconds, 4), capped=sent < nbytes, error=error)
    if len(reply) == REPLY.size:
        count, got = REPLY.unpack(reply)
        result["received"] = count
        result["ok"] = error is None and count == sent and (not digest or got == expected_digest(block, sent))
    else:
        result["ok"] = False
        result["error"] = error or f"the sink answered {len(reply)} bytes"
    result["MBps"] = round(sent / seconds / 1e6, 1) if result["ok"] else None
    return result


def sequential(port: int, count: int, max_s: float) -> dict:
    """One connection at a time: 1 byte out, 1 byte back; latency from connect() to that byte."""
    latencies, errors = [], []
    end = time.monotonic() + max_s
    t0 = time.perf_counter()
    for i in range(count):
        if time.monotonic() > end or len(errors) > 20:
            break
        byte = bytes([97 + i % 26])
        start = time.perf_counter()
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(byte)
                got = s.recv(1)
                stop = time.perf_counter()
        except OSError as e:
            errors.append(repr(e))
            continue
        if got != byte:
            errors.append(f"echoed {got!r} for {byte!r}")
            continue
        latencies.append(stop - start)
    return _connection_stats(latencies, errors, count, time.perf_counter() - t0)


async def _echo_once(loop, port: int, payload: bytes, timeout: float) -> float:
    """One connection echoing ``payload``; returns the seconds to its first byte back."""
    start = time.perf_counter()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (HOST, port))
            await loop.sock_sendall(sock, payload)
            got = await loop.sock_recv(sock, len(payload))
            first = time.perf_counter()
            while got and len(got) < len(payload):
                more = await loop.sock_recv(sock, len(payload) - len(got))
                if not more:
                    break
                got += more
    finally:
        sock.close()
    if hashlib.sha256(got).digest() != hashlib.sha256(payload).digest():
        raise OSError(f"echo digest mismatch ({len(got)} of {len(payload)} bytes back)")
    return first - start


def concurrent(port: int, count: int, clients: int, max_s: float) -> dict:
    """``clients`` connections in flight at a time, ``count`` in all, each echo checked by digest."""

    async def run() -> dict:
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        errors: list[str] = []
        started = 0
        end = time.monotonic() + max_s

        async def client() -> None:
            nonlocal started
            while started < count and time.monotonic() < end and len(errors) <= 50:
                started += 1
                try:
                    payload = b"e" + os.urandom(PAYLOAD - 1)  # never a sink's first byte
                    latencies.append(await _echo_once(loop, port, payload, 5))
                except (OSError, TimeoutError) as e:
                    errors.append(repr(e))

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return _connection_stats(latencies, errors, count, time.perf_counter() - t0)

    return asyncio.run(run())


def _connection_stats(latencies: list[float], errors: list[str], requested: int, wall: float) -> dict:
    def ms(q: float) -> float | None:
        return round(percentile(latencies, q) * 1e3, 4) if latencies else None

    return dict(
        requested=requested, completed=len(latencies), errors=len(errors), first_errors=errors[:3],
        seconds=round(wall, 4), conn_per_s=round(len(latencies) / wall, 1) if wall > 0 else None,
        p50_ms=ms(0.5), p99_ms=ms(0.99), capped=len(latencies) + len(errors) < requested,
    )


def hold(port: int, n: int, server: Program, client: Program, max_s: float, settle: float = 1.0) -> dict:
    """Open ``n`` tunnelled connections and keep them all open and idle; check each twice; RSS before and after."""

    async def run() -> dict:
        loop = asyncio.get_running_loop()
        before = dict(server=rss_kb(server.pid), client=rss_kb(client.pid))
        socks: list[socket.socket] = []
        errors: list[str] = []
        end = time.monotonic() + max_s
        attempted = 0

        async def opener() -> None:
            nonlocal attempted
            # Fewer in flight than the server lets wait per tunnel (128 by default).
            while attempted < n and time.monotonic() < end and len(errors) < 200:
                attempted += 1
                sock = socket.socket()
                sock.setblocking(False)
                try:
                    async with asyncio.timeout(12):  # past the server's 10 s claim deadline
                        await loop.sock_connect(sock, (HOST, port))
                        await loop.sock_sendall(sock, b"o")
                        got = await loop.sock_recv(sock, 1)
                    if got != b"o":
                        raise OSError(f"echoed {got!r}")
                except (OSError, TimeoutError) as e:
                    sock.close()
                    errors.append(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
                    continue
                socks.append(sock)

        t0 = time.perf_counter()
        await asyncio.gather(*(opener() for _ in range(32)))
        open_s = time.perf_counter() - t0
        await asyncio.sleep(settle)
        loaded = dict(server=rss_kb(server.pid), client=rss_kb(client.pid))
        files = dict(server=open_files(server.pid), client=open_files(client.pid))
        # Every held connection once more, from the other end of the list.
        failed_recheck = 0
        queue = list(reversed(socks))

        async def checker() -> None:
            nonlocal failed_recheck
            while queue and time.monotonic() < end + 60:
                sock = queue.pop()
                try:
                    async with asyncio.timeout(5):
                        await loop.sock_sendall(sock, b"k")
                        if await loop.sock_recv(sock, 1) != b"k":
                            raise OSError("bad echo")
                except (OSError, TimeoutError):
                    failed_recheck += 1

        await asyncio.gather(*(checker() for _ in range(64)))
        for sock in socks:
            sock.close()
        held = len(socks)
        result = dict(
            requested=n, attempted=attempted, established=held, failed=len(errors),
            rechecked_ok=held - failed_recheck - len(queue), first_errors=sorted(set(errors))[:5],
            open_seconds=round(open_s, 2), rss_kb_before=before, rss_kb_loaded=loaded, open_files=files,
            nofile=dict(server=nofile_limit(server.pid), client=nofile_limit(client.pid)),
        )
        if held:
            result["server_kb_per_conn"] = round((loaded["server"] - before["server"]) / held, 2)
            result["client_kb_per_conn"] = round((loaded["client"] - before["client"]) / held, 2)
        result["all_ok"] = held == n and result["rechecked_ok"] == n
        return result

    return asyncio.run(run())


# --------------------------------------------------------------------------
# Putting it together.
# --------------------------------------------------------------------------


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def ratio(a, b) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def spore_argv(option: str | None, default: list[str]) -> list[str]:
    return shlex.split(option) if option else default


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small sizes: about 15 seconds")
    parser.add_argument("--spore-bin", metavar="DIR", help="run DIR/spore (default: spore on PATH, else python -m spore)")
    parser.add_argument("--spore", metavar="CMD", help="command that runs spore, e.g. 'python -m spore'")
    parser.add_argument("--server-spore", metavar="CMD", help="command for the server only (e.g. under a profiler)")
    parser.add_argument("--client-spore", metavar="CMD", help="command for the client only")
    parser.add_argument("--server-args", default="", help="more options for spore server")
    parser.add_argument("--client-args", default="", help="more options for spore local")
    parser.add_argument("--secret", help="run the tunnel with this secret (the HMAC challenge on every connection)")
    parser.add_argument("--reps", type=int, help="runs of each phase, each direct and tunnelled (default 5, quick 3)")
    parser.add_argument("--phases", default="throughput,seq,conc,idle",
                        help="comma list of throughput,seq,conc,idle ('' for none)")
    parser.add_argument("--bytes", type=int, help="bytes per throughput run (default 1 GiB, quick 128 MiB)")
    parser.add_argument("--no-digest", action="store_true",
                        help="skip the throughput runs into a sha256 sink (only the counting runs)")
    parser.add_argument("--seq", type=int, help="connections per sequential run (default 2000, quick 300)")
    parser.add_argument("--conc", type=int, help="connections per concurrent run (default 4000, quick 1000)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--idle", type=int, help="idle connections held for the RSS figures (default 1000, quick 200)")
    parser.add_argument("--hold", type=int, default=0, metavar="N",
                        help="also hold N tunnelled connections at once and report whether all worked")
    parser.add_argument("--json", metavar="FILE", help="also write the full results here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the spore logs and say where")
    args = parser.parse_args()
    if args.service:
        _serve()
        return 0

    quick = args.quick
    reps = args.reps or (3 if quick else 5)
    nbytes = args.bytes or ((128 if quick else 1024) << 20)
    seq_n = args.seq or (300 if quick else 2000)
    conc_n = args.conc or (1000 if quick else 4000)
    idle_n = args.idle or (200 if quick else 1000)
    phases = [p for p in args.phases.split(",") if p]
    run_cap = 10.0 if quick else 20.0  # seconds any one run may take

    if args.spore:
        spore = shlex.split(args.spore)
    elif args.spore_bin:
        spore = [os.path.join(args.spore_bin, "spore")]
    elif shutil.which("spore"):
        spore = [shutil.which("spore")]
    else:
        spore = [sys.executable, "-m", "spore"]
    nofile = raise_nofile()
    logdir = tempfile.mkdtemp(prefix="spore-bench-")
    control_port, public_port = free_port(), free_port()
    secret = ["--secret", args.secret] if args.secret else []
    results: dict = dict(
        config=dict(spore=spore, reps=reps, bytes=nbytes, digest=not args.no_digest, seq=seq_n, conc=conc_n,
                    clients=args.clients, idle=idle_n, hold=args.hold, secret=bool(args.secret),
                    bench_nofile=list(nofile), cpus=os.cpu_count(), python=sys.version.split()[0]),
        errors=[],
    )
    service = server = client = None
    started = time.monotonic()
    try:
        service = Service()
        server = Program("server", spore_argv(args.server_spore, spore) + [
            "server", "--bind-addr", HOST, "--control-port", str(control_port),
            "--min-port", str(public_port), "--max-port", str(public_port), *secret,
            *shlex.split(args.server_args)], logdir)
        deadline = time.monotonic() + 15
        while not listening(control_port):
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"spore server did not start:\n{server.read()[-2000:]}")
            time.sleep(0.02)
        client = Program("client", spore_argv(args.client_spore, spore) + [
            "local", str(service.port), "--to", HOST, "--local-host", HOST, "--control-port", str(control_port),
            *secret, *shlex.split(args.client_args)], logdir)
        deadline = time.monotonic() + 15
        while not (found := re.search(r"listening at \S+:(\d+)", client.read("out"))):
            if not client.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"spore local did not open a tunnel:\n{client.read()[-2000:]}")
            time.sleep(0.02)
        tunnel_port = int(found.group(1))
        targets = {"direct": service.port, "tunnel": tunnel_port}
        results["processes"] = dict(
            server_pid=server.pid, client_pid=client.pid, service_port=service.port, tunnel_port=tunnel_port,
            rss_kb_at_start=dict(server=rss_kb(server.pid), client=rss_kb(client.pid)),
            nofile=dict(server=nofile_limit(server.pid), client=nofile_limit(client.pid)),
        )
        for port in targets.values():
            sequential(port, 20, 5)  # warm up both paths

        def tunnel_cost() -> tuple[float, int, int]:
            return cpu_seconds(server.pid) + cpu_seconds(client.pid), server.log_lines(), client.log_lines()

        def alternate(phase: str, measure) -> dict:
            """``reps`` runs of each, direct and tunnel taking turns at going first."""
            runs: dict[str, list] = {"direct": [], "tunnel": []}
            for rep in range(reps):
                order = ("direct", "tunnel") if rep % 2 == 0 else ("tunnel", "direct")
                for name in order:
                    cost = tunnel_cost()
                    result = measure(targets[name])
                    after = tunnel_cost()
                    if name == "tunnel":
                        result["tunnel_cpu_s"] = round(after[0] - cost[0], 3)
                        result["server_log_lines"] = after[1] - cost[1]
                        result["client_log_lines"] = after[2] - cost[2]
                    runs[name].append(result)
            return runs

        if "throughput" in phases:
            block = os.urandom(BLOCK)
            expected_digest(block, nbytes)
            results["throughput"] = {}
            # Counting runs give the ratio (hashing would slow the direct run the most);
            # the sha256 runs check every byte of a stream as fast as the tunnel takes it.
            for check in ("count",) + (() if args.no_digest else ("sha256",)):
                hashed = check == "sha256"
                runs = alternate("throughput", lambda port, hashed=hashed: throughput(port, block, nbytes, run_cap, hashed))
                ok = {k: [r for r in v if r["ok"]] for k, v in runs.items()}
                cpu_gb = [r["tunnel_cpu_s"] / (r["bytes"] / 1e9) for r in ok["tunnel"] if r["bytes"]]
                results["throughput"][check] = dict(
                    direct_MBps=median(r["MBps"] for r in ok["direct"]),
                    tunnel_MBps=median(r["MBps"] for r in ok["tunnel"]),
                    tunnel_cpu_s_per_GB=median(cpu_gb),
                    failures=sum(not r["ok"] for v in runs.values() for r in v),
                    runs=runs,
                )
        for phase, measure in (
            ("seq", lambda port: sequential(port, seq_n, run_cap)),
            ("conc", lambda port: concurrent(port, conc_n, args.clients, run_cap)),
        ):
            if phase not in phases:
                continue
            runs = alternate(phase, measure)
            summary = {}
            for name, rs in runs.items():
                summary[name] = dict(
                    conn_per_s=median(r["conn_per_s"] for r in rs), p50_ms=median(r["p50_ms"] for r in rs),
                    p99_ms=median(r["p99_ms"] for r in rs), errors=sum(r["errors"] for r in rs),
                    completed=sum(r["completed"] for r in rs),
                )
            tunnel_runs = runs["tunnel"]
            done = sum(r["completed"] + r["errors"] for r in tunnel_runs) or 1
            summary["tunnel_cpu_ms_per_conn"] = round(1e3 * sum(r["tunnel_cpu_s"] for r in tunnel_runs) / done, 3)
            summary["server_log_lines_per_conn"] = round(sum(r["server_log_lines"] for r in tunnel_runs) / done, 2)
            summary["client_log_lines_per_conn"] = round(sum(r["client_log_lines"] for r in tunnel_runs) / done, 2)
            summary["runs"] = runs
            results[phase] = summary
        if "idle" in phases:
            results["idle"] = hold(tunnel_port, idle_n, server, client, max_s=60)
        if args.hold:
            results["hold"] = hold(tunnel_port, args.hold, server, client, max_s=180)
            time.sleep(1)
        results["processes"]["alive_at_end"] = dict(server=server.alive(), client=client.alive())
    except Exception as e:  # report what was measured before it
        results["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        for program in (client, server):
            if program is not None:
                code = program.stop()
                log = program.read()
                problems = [line for line in log.splitlines()
                            if re.search(r"Traceback|Unhandled|Too many open files|EMFILE|could not", line)]
                results.setdefault("logs", {})[program.name] = dict(
                    exit_code=code, lines=log.count("\n"), problem_lines=len(problems), first_problems=problems[:5])
        if service is not None:
            service.stop()
        if args.keep_logs:
            results["logdir"] = logdir
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["summary"] = summarize(results)
    print(table(results))
    line = json.dumps(dict(summary=results["summary"], errors=results["errors"]), separators=(",", ":"))
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if results["errors"] else 0


def summarize(results: dict) -> dict:
    s: dict = {}
    for check, t in results.get("throughput", {}).items():
        s[f"throughput_MBps_{check}"] = dict(
            direct=t["direct_MBps"], tunnel=t["tunnel_MBps"], ratio=ratio(t["tunnel_MBps"], t["direct_MBps"]),
            tunnel_cpu_s_per_GB=t["tunnel_cpu_s_per_GB"], failures=t["failures"])
    for phase in ("seq", "conc"):
        if phase in results:
            d, t = results[phase]["direct"], results[phase]["tunnel"]
            s[phase] = dict(
                direct_conn_per_s=d["conn_per_s"], tunnel_conn_per_s=t["conn_per_s"],
                conn_per_s_ratio=ratio(t["conn_per_s"], d["conn_per_s"]),
                direct_p50_ms=d["p50_ms"], tunnel_p50_ms=t["p50_ms"], p50_ratio=ratio(t["p50_ms"], d["p50_ms"]),
                direct_p99_ms=d["p99_ms"], tunnel_p99_ms=t["p99_ms"], p99_ratio=ratio(t["p99_ms"], d["p99_ms"]),
                errors=d["errors"] + t["errors"],
                tunnel_cpu_ms_per_conn=results[phase]["tunnel_cpu_ms_per_conn"],
                log_lines_per_conn=dict(server=results[phase]["server_log_lines_per_conn"],
                                        client=results[phase]["client_log_lines_per_conn"]),
            )
    for phase in ("idle", "hold"):
        if phase in results:
            h = results[phase]
            s[phase] = {k: h.get(k) for k in ("requested", "established", "rechecked_ok", "all_ok",
                                              "server_kb_per_conn", "client_kb_per_conn", "open_files", "nofile",
                                              "first_errors")}
    if "processes" in results:
        s["alive_at_end"] = results["processes"].get("alive_at_end")
    s["log_problem_lines"] = {k: v["problem_lines"] for k, v in results.get("logs", {}).items()}
    return s


def table(results: dict) -> str:
    s = results["summary"]
    rows = [("figure", "direct", "tunnel", "tunnel/direct", "target", "")]

    def fmt(v, digits=1):
        return "-" if v is None else f"{v:,.{digits}f}"

    def verdict(key, value):
        if value is None:
            return ("", "")
        _, op, bound = TARGETS[key]
        ok = value >= bound if op == ">=" else value <= bound
        return (f"{op} {bound:g}", "ok" if ok else "MISSED")

    for check, label in (("count", "throughput, MB/s"), ("sha256", "throughput, MB/s, sha256 sink")):
        t = s.get(f"throughput_MBps_{check}")
        if t:
            rows.append((label, fmt(t["direct"]), fmt(t["tunnel"]), fmt(t["ratio"], 3),
                         *(verdict("throughput", t["ratio"]) if check == "count" else ("", ""))))
    for phase, label in (("seq", "sequential"), ("conc", f"{results['config']['clients']} concurrent")):
        if phase in s:
            p = s[phase]
            rows.append((f"{label}, conn/s", fmt(p["direct_conn_per_s"]), fmt(p["tunnel_conn_per_s"]),
                         fmt(p["conn_per_s_ratio"], 3), *verdict(f"{phase}_conn_per_s", p["conn_per_s_ratio"])))
            rows.append((f"{label}, first byte p50 ms", fmt(p["direct_p50_ms"], 3), fmt(p["tunnel_p50_ms"], 3),
                         fmt(p["p50_ratio"], 2), *(verdict("seq_p50", p["p50_ratio"]) if phase == "seq" else ("", ""))))
            rows.append((f"{label}, first byte p99 ms", fmt(p["direct_p99_ms"], 3), fmt(p["tunnel_p99_ms"], 3),
                         fmt(p["p99_ratio"], 2), "", ""))
            rows.append((f"{label}, tunnel CPU ms/conn", "", fmt(p["tunnel_cpu_ms_per_conn"], 3), "", "", ""))
    for phase in ("idle", "hold"):
        if phase in s:
            h = s[phase]
            n = h["requested"]
            rows.append((f"{phase}: {n} conns, server KB/conn", "", fmt(h["server_kb_per_conn"], 2), "",
                         *verdict("idle_server_kb", h["server_kb_per_conn"])))
            rows.append((f"{phase}: {n} conns, client KB/conn", "", fmt(h["client_kb_per_conn"], 2), "",
                         *verdict("idle_client_kb", h["client_kb_per_conn"])))
            rows.append((f"{phase}: established / rechecked", "", f"{h['established']}/{h['rechecked_ok']}", "",
                         f"= {n}", "ok" if h["all_ok"] else "MISSED"))
    failures = (sum(s[k]["failures"] for k in s if k.startswith("throughput_MBps"))
                + sum(s[p]["errors"] for p in ("seq", "conc") if p in s))
    if any(k.startswith("throughput") or k in ("seq", "conc") for k in s):
        rows.append(("byte checks failed (digest, echo)", "", str(failures), "", "= 0", "ok" if not failures else "MISSED"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    for err in results["errors"]:
        lines.append(f"error: {err}")
    for name, log in results.get("logs", {}).items():
        if log["problem_lines"]:
            lines.append(f"{name} log: {log['problem_lines']} problem lines, e.g. {log['first_problems'][0][:160]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
