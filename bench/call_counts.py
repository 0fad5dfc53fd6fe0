#!/usr/bin/env python3
"""Function calls per visitor in a tunnel's two processes: a yardstick that does not wander.

On these machines two timed runs of the same code differ by as much as a
change to the visitor's path can gain (see PROFILE.md), so a change that
saves 3 % cannot be told from noise without dozens of runs.  This counts
instead: every Python function call and every call of a C function from
Python (named with its caller), in the server and in the client, while N visitors go through the
tunnel one after another (64 bytes each way), and prints the calls per
visitor with the functions that make most of them.  The counts are the same
from run to run to within a call or two, whatever else the machine does.  A
call is not a fixed cost (a ``send`` costs more than a ``len``), so this
says what work there is, and timed runs still say what it costs.

    unshare -n sh -c 'ip link set lo up; python3 bench/call_counts.py'
    unshare -n sh -c 'ip link set lo up; python3 bench/call_counts.py --server lean --client lean'
    python3 bench/call_counts.py --json after.json ... --baseline before.json   # what a change added or saved

``spore`` is ``python -m spore`` from wherever this interpreter imports it
(``PYTHONPATH=/path/to/other/tree`` counts another version); ``lean`` is
``bench/twisted_floor.py --lean``.  Counting runs each process about five
times slower than usual.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import re
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
FLOOR = os.path.join(HERE, "twisted_floor.py")


def counted(out: str, argv: list[str]) -> None:
    """Run ``argv`` (``-m module ...`` or ``script ...``) here, counting calls from SIGUSR1 to SIGUSR2."""
    counts: collections.Counter[str] = collections.Counter()

    def where(code) -> str:
        path = code.co_filename
        for marker in ("site-packages/", "/bench/", "/spore/"):
            if marker in path:
                path = ("spore/" if marker == "/spore/" else "") + path.split(marker, 1)[1]
                break
        return f"{path}:{code.co_name}"

    def profile(frame, event, arg) -> None:
        if event == "call":
            counts[where(frame.f_code)] += 1
        elif event == "c_call":
            # Named with the Python function that called it, which is where its cost belongs.
            counts[f"C {getattr(arg, '__qualname__', repr(arg))} (from {where(frame.f_code)})"] += 1

    def start(signum, frame) -> None:
        counts.clear()
        sys.setprofile(profile)

    def stop(signum, frame) -> None:
        sys.setprofile(None)
        with open(out, "w") as f:
            json.dump(counts, f)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


def echo_service() -> int:
    listener = socket.create_server((HOST, 0))

    def serve(connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    def accept() -> None:
        while True:
            connection, _ = listener.accept()
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def visit(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"x" * 64)
        got = b""
        while len(got) < 64:
            data = s.recv(64)
            if not data:
                raise RuntimeError("the tunnel closed before the echo came back")
            got += data


def program(kind: str, role: str, control_port: int, service_port: int) -> list[str]:
    if kind == "spore":
        head = ["-m", "spore"]
    else:
        head = [FLOOR, "--lean"]
    if role == "server":
        public = str(free_port())
        return [*head, "server", "--bind-addr", HOST, "--control-port", str(control_port),
                "--min-port", public, "--max-port", public]
    return [*head, "local", str(service_port), "--to", HOST, "--local-host", HOST, "--control-port", str(control_port)]


def measure(args) -> dict[str, dict[str, float]]:
    service_port, control_port = echo_service(), free_port()
    workdir = tempfile.mkdtemp(prefix="spore-calls-")
    outs = {role: os.path.join(workdir, role + ".json") for role in ("server", "client")}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for role, kind in (("server", args.server), ("client", args.client)):
            argv = [sys.executable, __file__, "--counted", outs[role], "--",
                    *program(kind, role, control_port, service_port)]
            procs[role] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if role == "server":
                deadline = time.monotonic() + 15
                while not listening(control_port):
                    if procs[role].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the server did not start")
                    time.sleep(0.05)
        lines: queue.Queue[str] = queue.Queue()
        for proc in procs.values():  # keep their pipes drained; the client's lines are looked at
            threading.Thread(target=lambda out: [lines.put(line) for line in out], args=(proc.stdout,),
                             daemon=True).start()
        deadline, port = time.monotonic() + 15, None
        while port is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("the client did not open a tunnel") from None
            if (found := re.search(r"listening at \S+:(\d+)", line)):
                port = int(found.group(1))
        for _ in range(args.warmup):
            visit(port)
        time.sleep(0.3)  # the warm-up's closes are done
        for proc in procs.values():
            proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        for _ in range(args.visitors):
            visit(port)
        time.sleep(0.3)  # and so are the last visitor's
        for proc in procs.values():
            proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not all(os.path.exists(out) for out in outs.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("a process did not write its counts")
            time.sleep(0.05)
        time.sleep(0.2)
        result = {}
        for role, out in outs.items():
            with open(out) as f:
                result[role] = {name: n / args.visitors for name, n in json.load(f).items()}
        return result
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for out in outs.values():
            if os.path.exists(out):
                os.unlink(out)
        os.rmdir(workdir)


def report(result: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]] | None, top: int) -> None:
    for role, counts in result.items():
        python = sum(n for name, n in counts.items() if not name.startswith("C "))
        c = sum(counts.values()) - python
        line = f"{role}: {python + c:.0f} calls per visitor ({python:.0f} Python functions, {c:.0f} C functions)"
        if baseline is None:
            print(line)
            for name, n in sorted(counts.items(), key=lambda item: -item[1])[:top]:
                print(f"  {n:8.2f}  {name}")
            continue
        before = baseline[role]
        print(f"{line}; baseline {sum(before.values()):.0f}")
        changes = {name: counts.get(name, 0) - before.get(name, 0) for name in counts.keys() | before.keys()}
        changed = [(name, n) for name, n in changes.items() if abs(n) >= 0.5]
        if not changed:
            print("  no function's calls changed by half a call per visitor or more")
        for name, n in sorted(changed, key=lambda item: -abs(item[1]))[:top]:
            print(f"  {n:+8.2f}  {name}")


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--counted":
        return counted(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--server", choices=("spore", "lean"), default="spore")
    parser.add_argument("--client", choices=("spore", "lean"), default="spore")
    parser.add_argument("--visitors", type=int, default=1000, help="visitors counted (default 1000)")
    parser.add_argument("--warmup", type=int, default=200, help="visitors before counting starts (default 200)")
    parser.add_argument("--top", type=int, default=25, help="functions listed per process (default 25)")
    parser.add_argument("--json", help="write the counts per visitor here")
    parser.add_argument("--baseline", help="a --json file of another run: print what changed")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
    baseline = None
    if args.baseline:
        with open(args.baseline) as f:
            baseline = json.load(f)
    report(result, baseline, args.top)


if __name__ == "__main__":
    main()
