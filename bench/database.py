#!/usr/bin/env python3
"""A real database client through a tunnel: PostgreSQL's pgbench, straight, through bore and through Spore.

``bench/interactive.py`` measures small round trips with a load generator of
our own; this measures what a database user sees.  It starts a throwaway
PostgreSQL server on 127.0.0.1 (``initdb`` in a temporary directory, trust
authentication, ``pgbench -i``), then for each of --reps rounds runs
``pgbench --select-only`` with --clients clients for --seconds seconds,
straight to the database and through each tunnel in turn:

  held            each client holds one connection for the run
  per_connection  each transaction opens a connection of its own (``pgbench
                  --connect``): the database's start of a session (a new
                  backend process) is part of every transaction, as with a
                  client that does not pool its connections

and prints transactions per second, medians of the rounds, with each tunnel's
figure divided by direct and Spore's by bore's.  The tunnels are bore 0.5
(client and server) and Spore (client and server), started as
``bench/versus_bore.py`` and ``bench/interactive.py`` start them; bore's control port is fixed, so run it
in a private network namespace:

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/database.py'

It needs PostgreSQL's server programs (Debian's ``postgresql`` package: it
looks in /usr/lib/postgresql/*/bin) and refuses to run without them.  As root
it runs the database as the ``postgres`` user, which PostgreSQL insists on.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interactive import start_tunnel  # noqa: E402
from versus_bore import HOST, REPO, tunnel_commands, wait_control_port  # noqa: E402

MODES = {"held": [], "per_connection": ["--connect"]}
PORT_REGEX = r"listening at [^\s:]+:(\d+)"


def postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return os.path.dirname(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    return os.path.dirname(pg_ctl) if pg_ctl else None


def as_database_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Database:
    """A throwaway PostgreSQL cluster on 127.0.0.1."""

    def __init__(self, bin_dir: str) -> None:
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="spore_database_")
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")

    def run(self, program: str, *args: str) -> None:
        done = subprocess.run(as_database_user([os.path.join(self.bin, program), *args]), check=False,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()[-800:]}")

    def start(self) -> None:
        self.run("initdb", "-D", self.data, "-A", "trust", "-U", "bench")
        options = f"-h {HOST} -p {self.port} -k {self.dir} -c max_connections=200 -c fsync=off"
        self.run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.dir, "log"), "-w", "start")
        self.run("pgbench", "-i", "-q", "-h", HOST, "-p", str(self.port), "-U", "bench", "postgres")

    def stop(self) -> None:
        try:
            self.run("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        except RuntimeError as e:  # not started, or already gone: say so, and do not hide why we stopped
            print(e, file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


def pgbench(db: Database, port: int, mode: str, args: argparse.Namespace) -> float:
    argv = as_database_user([os.path.join(db.bin, "pgbench"), "-h", HOST, "-p", str(port), "-U", "bench",
                             "--select-only", "-c", str(args.clients), "-j", "2", "-T", str(args.seconds),
                             *MODES[mode], "postgres"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.seconds + 60, check=False)
    match = re.search(r"tps = ([\d.]+)", done.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if done.returncode != 0 or match is None or (failed and int(failed.group(1))):
        raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stdout[-800:]}{done.stderr[-800:]}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bore", default=os.path.normpath(os.path.join(REPO, "../shared/bore/bore-0.5")))
    parser.add_argument("--spore", default=shutil.which("spore") or f"{sys.executable} -m spore")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    bin_dir = postgres_bin()
    if bin_dir is None:
        sys.exit("PostgreSQL's server programs are not installed (Debian: apt-get install postgresql)")
    servers, clients = tunnel_commands(args.bore, args.spore)
    db = Database(bin_dir)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        db.start()
        for rep in range(args.reps):
            for mode in args.modes.split(","):
                runs = results.setdefault(mode, {"direct": [], "bore": [], "spore": []})
                order = ["direct", "bore", "spore"] if rep % 2 == 0 else ["spore", "bore", "direct"]
                for name in order:
                    if name == "direct":
                        runs[name].append(pgbench(db, db.port, mode, args))
                        continue
                    if not wait_control_port(10):
                        sys.exit("port 7835 is taken: run this in a private network namespace")
                    tunnel = argparse.Namespace(server_cmd=servers[name], client_cmd=clients[name],
                                                server_ready_regex="listening", port_regex=PORT_REGEX)
                    programs = []
                    try:
                        _, _, public = start_tunnel(tunnel, db.port, db.dir, programs)
                        runs[name].append(pgbench(db, public, mode, args))
                    finally:
                        for program in programs:
                            program.stop()
                print(f"round {rep + 1}, {mode}: " + ", ".join(f"{n} {runs[n][-1]:.0f} tps" for n in order),
                      flush=True)
    finally:
        db.stop()
    print(f"\npgbench --select-only, {args.clients} clients, {args.seconds} s runs, medians of {args.reps}:\n")
    print("| mode | direct tps | bore tps (÷ direct) | Spore tps (÷ direct) | Spore ÷ bore, each round |")
    print("|---|---|---|---|---|")
    for mode, runs in results.items():
        direct, bore, spore = (statistics.median(runs[n]) for n in ("direct", "bore", "spore"))
        ratios = sorted(s / b for s, b in zip(runs["spore"], runs["bore"]))
        print(f"| {mode} | {direct:.0f} | {bore:.0f} ({bore / direct:.2f}) | {spore:.0f} ({spore / direct:.2f}) "
              f"| **{statistics.median(ratios):.2f}** [{ratios[0]:.2f}-{ratios[-1]:.2f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
