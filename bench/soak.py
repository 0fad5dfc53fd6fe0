#!/usr/bin/env python3
"""Soak test: mixed traffic through a real spore tunnel for a while, every byte checked.

Starts a local echo service, a `spore server` and a `spore local` on loopback,
then runs worker threads that open tunnelled connections of several kinds
(short echoes, long uploads echoed back, half-closes, resets) while the
client is restarted now and then.  Every exchange that completes is checked
by SHA-256; a completed exchange whose bytes differ counts as lost.  Prints
a JSON report: exchanges, lost bytes (must be 0), errors by kind, and the
server's open descriptors and RSS over time (should stay flat).

    python bench/soak.py --minutes 10
    python bench/soak.py --seconds 8 --workers 4      # the short run the tests use

Only 127.0.0.1 is used; every loop is bounded by the duration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

TIMEOUT = 10.0


def spore_command() -> list[str]:
    found = shutil.which("spore", path=str(Path(sys.executable).parent)) or shutil.which("spore")
    return [found] if found else [sys.executable, "-m", "spore"]


class Echo:
    """Echo service on 127.0.0.1: sends back every byte, then half-closes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        conn.settimeout(60)
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process: subprocess.Popen, stream: str, pattern: str) -> re.Match:
    deadline = time.monotonic() + TIMEOUT
    pipe = getattr(process, stream)
    while time.monotonic() < deadline:
        line = pipe.readline()
        if match := re.search(pattern, line):
            return match
        if not line and process.poll() is not None:
            break
    raise RuntimeError(f"{pattern!r} not seen from {process.args}")


def drain(process: subprocess.Popen) -> None:
    """Keep reading a process's pipes so it never blocks on a full one."""
    for pipe in (process.stdout, process.stderr):
        threading.Thread(target=lambda p=pipe: [None for _ in p], daemon=True).start()


def send_all(conn: socket.socket, data: bytes) -> None:
    """Send ``data`` and a FIN; a connection cut meanwhile shows in what comes back."""
    try:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def exchange(port: int, kind: str, rng: random.Random) -> tuple[str, int]:
    """One tunnelled connection of ``kind``: ("same", "cut" short or "different", size)."""
    size = {"short": rng.randint(1, 2000), "long": rng.randint(200_000, 3_000_000)}.get(kind, rng.randint(1, 50_000))
    data = rng.randbytes(size)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        if kind == "reset":
            conn.sendall(data)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return "same", 0  # nothing to check: the visitor threw its bytes away
        sender = threading.Thread(target=send_all, args=(conn, data))
        sender.start()
        received = bytearray()
        while chunk := conn.recv(1 << 20):
            received += chunk
        sender.join(TIMEOUT)
    if hashlib.sha256(received).digest() == hashlib.sha256(data).digest():
        return "same", size
    return ("cut" if data.startswith(received) else "different"), size


def sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_kb": int(re.search(r"VmRSS:\s+(\d+)", status).group(1)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=0)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--restart-every", type=float, default=10, help="seconds between client restarts")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    duration = args.minutes * 60 or args.seconds

    spore = spore_command()
    echo = Echo()
    server = start([*spore, "server", "--listen", "tcp:0:interface=127.0.0.1", "--bind-tunnels", "127.0.0.1",
                    "--min-port", "20000", "--max-port", "29999"])
    control_port = int(wait_for_line(server, "stderr", r"server listening on 127\.0\.0\.1:(\d+)").group(1))
    drain(server)
    client_argv = [*spore, "local", str(echo.port), "--to", "127.0.0.1", "--control-port", str(control_port),
                   "--local-host", "127.0.0.1"]
    client = start(client_argv)
    public_port = int(wait_for_line(client, "stdout", r"listening at 127\.0\.0\.1:(\d+)").group(1))
    drain(client)

    results: Counter[str] = Counter()
    lost = checked = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + duration
    restarting = threading.Event()
    restarts = 0
    restart_windows: list[list[float]] = []  # [began, ended] of each client restart

    def worker(n: int) -> None:
        nonlocal lost, checked
        rng = random.Random(args.seed * 1000 + n)
        while time.monotonic() < stop_at:
            kind = rng.choices(["short", "long", "medium", "reset"], weights=[60, 5, 30, 5])[0]
            began = time.monotonic()
            try:
                outcome, size = exchange(public_port, kind, rng)
            except OSError as e:
                with lock:
                    # While the client restarts, refused or cut connections are expected.
                    results[("during restart: " if restarting.is_set() else "") + type(e).__name__] += 1
                time.sleep(0.05)
                continue
            ended = time.monotonic()
            with lock:
                # A connection open while the client restarts dies with it (and
                # so may one that arrived just as the old tunnel was closing).
                near_restart = any(b - 1.0 <= ended and began <= (e or ended) + 1.0 for b, e in restart_windows)
                if outcome == "cut" and near_restart:
                    results["cut by a client restart"] += 1
                    continue
                results[kind] += 1
                checked += size
                if outcome != "same":
                    results[f"{kind} {outcome}"] += 1
                    lost += size
                    print(f"{outcome} {kind} exchange at t={time.monotonic() - started:.2f}s (restart {restarts})",
                          file=sys.stderr)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(args.workers)]
    for thread in threads:
        thread.start()
    samples = [{"t": 0.0, **sample(server.pid)}]
    next_restart = started + args.restart_every
    while time.monotonic() < stop_at:
        time.sleep(min(1.0, max(0.0, stop_at - time.monotonic())))
        samples.append({"t": round(time.monotonic() - started, 1), **sample(server.pid)})
        if time.monotonic() >= next_restart and time.monotonic() + 3 < stop_at:
            restarting.set()
            restarts += 1
            with lock:
                restart_windows.append([time.monotonic(), None])
            print(f"restart {restarts} at t={time.monotonic() - started:.2f}s", file=sys.stderr)
            client.send_signal(signal.SIGTERM)
            client.wait(TIMEOUT)
            client = start([*client_argv, "--port", str(public_port)])
            wait_for_line(client, "stdout", rf"listening at 127\.0\.0\.1:{public_port}")
            drain(client)
            print(f"restart {restarts} done at t={time.monotonic() - started:.2f}s", file=sys.stderr)
            with lock:
                restart_windows[-1][1] = time.monotonic()
            restarting.clear()
            next_restart = time.monotonic() + args.restart_every
    for thread in threads:
        thread.join(TIMEOUT + 5)
    time.sleep(1)  # let the last connections close before the final sample
    samples.append({"t": round(time.monotonic() - started, 1), **sample(server.pid)})
    for process in (client, server):
        process.send_signal(signal.SIGTERM)
        process.wait(TIMEOUT)
    echo.close()

    report = {
        "seconds": duration,
        "exchanges": dict(results),
        "bytes_checked": checked,
        "lost_bytes": lost,
        "server_samples": samples,
        "server_fds_first_last": [samples[0]["fds"], samples[-1]["fds"]],
        "server_rss_kb_first_last": [samples[0]["rss_kb"], samples[-1]["rss_kb"]],
    }
    print(json.dumps(report))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
