#!/usr/bin/env python3
"""How much CPU a tunnel server spends on idle tunnels.

What it measures
----------------
For each server command given with ``--server-cmd`` (Spore, stock bore, ...)
one run:

1. starts the server (its output goes to a temporary log file) and waits until
   its control port (127.0.0.1:7835 unless ``--control-port``) accepts;
2. opens ``--tunnels`` control connections (default 1000), each sending
   ``{"Hello":0}`` and waiting for the server's ``{"Hello":PORT}``.  They are
   opened in batches of at most ``--batch`` unanswered handshakes (default
   100) and bound to 50 loopback source addresses (127.0.0.2 to 127.0.0.51,
   port 0), because Spore caps how many handshakes one address may hold;
3. waits ``--settle`` seconds, then holds every tunnel idle for ``--seconds``
   (default 10) while one epoll loop reads and discards what the server sends
   (heartbeats, 2 a second per tunnel);
4. reports, over that window, the server's CPU (utime + stime of the server
   and its descendants, from /proc/PID/stat) as % of one core, also split
   into user and sys (on loopback the kernel delivers each heartbeat to the
   reader in the sender's system call, so that is in the server's sys time),
   this generator's own CPU for reference, the server's RSS and open files after
   the window, the heartbeats received per tunnel and second, and every
   connection that failed, got an ``Error`` frame or was closed.

Several ``--server-cmd`` are run one after another, ``--runs`` times (default
3), alternating which goes first; the table at the end gives the median
CPU % [min-max] of each.

How to run it
-------------
bore's control port is fixed at 7835, so run it in a private network
namespace (nothing else on the machine is touched or disturbs it), with the
standard library only:

    unshare -n sh -c 'ip link set lo up; python3 bench/idle_tunnels.py \\
        --server-cmd ".venv/bin/spore server --min-port 10000 --max-port 30000 --max-tunnels-per-ip 100000" \\
        --server-cmd "../shared/bore/bore-0.5 server --min-port 10000 --max-port 30000" \\
        --tunnels 1000'

The command is split like a shell would (shlex) and run without a shell.
The benchmark raises its soft RLIMIT_NOFILE to the hard limit; the server
inherits it (it needs about 2 files per tunnel, this process 1).  Every loop
is bounded in count and time, and the server is killed at exit, on errors
too.  ``--json FILE`` writes every run.  A run takes about ``--settle`` +
``--seconds`` + 3 s, plus the opening (here 1 s for 1,000 Spore tunnels,
10 s for 5,000); the exit status is 1 if a run failed or lost a connection.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SOURCES = [f"127.0.0.{2 + i}" for i in range(50)]
HELLO = b'{"Hello":0}\0'
HEARTBEAT = b'"Heartbeat"\0'
RECV_SIZE = 65536
CLK_TCK = os.sysconf("SC_CLK_TCK")
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def default_server_cmd() -> str:
    """Spore next to this interpreter if there is one, else ``spore`` on PATH."""
    here = Path(sys.executable).parent / "spore"
    spore = str(here) if here.exists() else (shutil.which("spore") or "spore")
    return f"{spore} server --min-port 10000 --max-port 30000 --max-tunnels-per-ip 100000"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--server-cmd",
        action="append",
        metavar="CMD",
        help="server command; repeat to compare several (default: spore server ...)",
    )
    p.add_argument("--tunnels", type=int, default=1000, help="idle tunnels to hold (default 1000)")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring window (default 10)")
    p.add_argument("--runs", type=int, default=3, help="runs per command, alternating (default 3)")
    p.add_argument(
        "--settle", type=float, default=2.0, help="seconds between the last tunnel opened and the window (default 2)"
    )
    p.add_argument("--batch", type=int, default=100, help="unanswered handshakes at most (default 100)")
    p.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        help="seconds one connection may take to get its Hello (default 10)",
    )
    p.add_argument(
        "--open-timeout", type=float, default=180.0, help="seconds all tunnels may take to open (default 180)"
    )
    p.add_argument(
        "--start-timeout", type=float, default=20.0, help="seconds the server may take to listen (default 20)"
    )
    p.add_argument("--control-port", type=int, default=7835, help="the server's control port (default 7835)")
    p.add_argument("--json", metavar="FILE", help="write every run to FILE as JSON")
    p.add_argument("--keep-logs", action="store_true", help="keep the server logs and say where")
    args = p.parse_args(argv)
    args.server_cmd = args.server_cmd or [default_server_cmd()]
    if args.tunnels < 1 or args.runs < 1 or args.batch < 1 or args.seconds <= 0:
        p.error("--tunnels, --runs, --batch and --seconds must be positive")
    return args


# ---------------------------------------------------------------- environment


def raise_nofile(tunnels: int) -> int:
    """Raise the soft open-file limit to the hard one (children inherit it); warn if short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = 2 * tunnels + 64
    if hard != resource.RLIM_INFINITY and hard < need:
        warn(f"open-file hard limit {hard} < {need} needed by the server for {tunnels} tunnels")
    return hard


def check_namespace() -> None:
    """Warn when this does not look like a private network namespace (one with only lo)."""
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]  # this namespace's interfaces
    except OSError:
        return
    others = sorted({line.split(":")[0].strip() for line in lines} - {"lo"})
    if others:
        warn(
            f"network interfaces besides lo ({', '.join(others)}): "
            "run this in a private namespace (unshare -n), see the docstring"
        )


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- the server


class Server:
    """One server process in its own session, killed (with its group) by ``stop``."""

    def __init__(self, cmd: str, keep_log: bool):
        argv = shlex.split(cmd)
        self.cmd = cmd
        self.keep_log = keep_log
        # closed (and removed) in stop(), or here if the server cannot start
        self.log = tempfile.NamedTemporaryFile(prefix="idle_tunnels-", suffix=".log", delete=False)  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError:
            self.log.close()
            os.unlink(self.log.name)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if exited(self.pid):
                raise RuntimeError(f"server exited:\n{self.log_tail()}")
            if port_open(port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"server not listening on {HOST}:{port} after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after 5 s; remove the log unless kept.

        The leader is reaped only after the SIGKILL, so its pid (the group's id)
        cannot have been reused by then.
        """
        pid = self.proc.pid
        if not exited(pid):
            signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not exited(pid):
                time.sleep(0.05)
        signal_group(pid, signal.SIGKILL)  # the leader if still there, and any child left behind
        self.proc.wait(timeout=10)
        self.log.close()
        if self.keep_log:
            print(f"  server log: {self.log.name}", flush=True)
        else:
            os.unlink(self.log.name)


def exited(pid: int) -> bool:
    """Whether our child has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- /proc


def proc_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of one process (all its threads), in clock ticks; zeros if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from 3 (state) on
    return int(fields[11]), int(fields[12])  # fields 14 and 15


def descendants(pid: int) -> list[int]:
    """pid and every process below it (one pass over /proc)."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            parent[int(name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, frontier = [pid], [pid]
    for _ in range(64):  # depth bound
        frontier = [child for child, ppid in parent.items() if ppid in frontier]
        if not frontier:
            break
        tree += frontier
    return tree


def tree_cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of these processes."""
    ticks = [proc_ticks(p) for p in pids]
    return sum(u for u, _ in ticks) / CLK_TCK, sum(s for _, s in ticks) / CLK_TCK


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# ---------------------------------------------------------------- the clients


@dataclass
class Tally:
    """What happened to the control connections."""

    opened: int = 0
    connect_failed: int = 0
    errors: int = 0  # an Error frame, in the handshake or later
    timeouts: int = 0
    closed: int = 0  # closed by the server (EOF or reset)
    other_frames: int = 0  # neither Hello, Heartbeat nor Error
    heartbeats: int = 0  # received in the measuring window
    error_texts: dict = field(default_factory=dict)

    def error(self, text: str) -> None:
        self.errors += 1
        self.error_texts[text] = self.error_texts.get(text, 0) + 1


@dataclass
class Conn:
    sock: socket.socket
    deadline: float
    state: str = "connecting"  # connecting, hello, idle
    buf: bytes = b""


def start_connect(index: int, port: int, sel: selectors.BaseSelector, timeout: float) -> Conn:
    """A non-blocking connect from the index-th source address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((SOURCES[index % len(SOURCES)], 0))
        code = sock.connect_ex((HOST, port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
    except OSError:
        sock.close()
        raise
    conn = Conn(sock, time.monotonic() + timeout)
    sel.register(sock, selectors.EVENT_WRITE, conn)
    return conn


def drop(conn: Conn, sel: selectors.BaseSelector) -> None:
    sel.unregister(conn.sock)
    conn.sock.close()
    conn.state = "dropped"


def on_writable(conn: Conn, sel: selectors.BaseSelector, tally: Tally) -> None:
    """The connect finished: send Hello(0), or count the failure."""
    if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
        tally.connect_failed += 1
        drop(conn, sel)
        return
    try:
        sent = conn.sock.send(HELLO)
    except OSError:
        sent = 0
    if sent != len(HELLO):  # a fresh socket takes 12 bytes at once
        tally.connect_failed += 1
        drop(conn, sel)
        return
    conn.state = "hello"
    sel.modify(conn.sock, selectors.EVENT_READ, conn)


def on_readable(conn: Conn, sel: selectors.BaseSelector, tally: Tally) -> None:
    """Read what the server sent; handle complete frames (fast path: one heartbeat)."""
    try:
        data = conn.sock.recv(RECV_SIZE)
    except OSError:
        data = b""
    if not data:
        if conn.state == "hello":
            tally.connect_failed += 1
        else:
            tally.closed += 1
        drop(conn, sel)
        return
    if conn.state == "idle" and not conn.buf and data == HEARTBEAT:
        tally.heartbeats += 1
        return
    frames = (conn.buf + data).split(b"\0")
    conn.buf = frames.pop()
    for frame in frames:
        if conn.state == "dropped":
            break
        on_frame(conn, frame, sel, tally)
    if len(conn.buf) > 4096 and conn.state != "dropped":  # no NUL in sight: not a bore server
        tally.other_frames += 1
        drop(conn, sel)


def on_frame(conn: Conn, frame: bytes, sel: selectors.BaseSelector, tally: Tally) -> None:
    if frame == HEARTBEAT[:-1]:
        tally.heartbeats += conn.state == "idle"
        return
    try:
        message = json.loads(frame)
    except ValueError:
        message = None
    if isinstance(message, dict) and "Error" in message:
        tally.error(str(message["Error"]))
        drop(conn, sel)
    elif conn.state == "hello" and isinstance(message, dict) and isinstance(message.get("Hello"), int):
        conn.state = "idle"
        tally.opened += 1
    else:
        tally.other_frames += 1


def dispatch(sel: selectors.BaseSelector, timeout: float, tally: Tally) -> None:
    for key, events in sel.select(timeout):
        conn = key.data
        if conn.state == "connecting" and events & selectors.EVENT_WRITE:
            on_writable(conn, sel, tally)
        elif events & selectors.EVENT_READ:
            on_readable(conn, sel, tally)


def expire(waiting: list[Conn], sel: selectors.BaseSelector, tally: Tally) -> list[Conn]:
    """Drop handshakes past their deadline; return those still waiting for their Hello."""
    now, still = time.monotonic(), []
    for conn in waiting:
        if conn.state in ("connecting", "hello"):
            if now < conn.deadline:
                still.append(conn)
            else:
                tally.timeouts += 1
                drop(conn, sel)
    return still


def open_tunnels(n: int, args, sel: selectors.BaseSelector, tally: Tally) -> list[Conn]:
    """Open n tunnels, at most args.batch unanswered at once; return every connection made."""
    conns: list[Conn] = []
    waiting: list[Conn] = []
    deadline = time.monotonic() + args.open_timeout
    for _ in range(50 * n + 10_000):  # each pass starts a connect or waits up to 0.1 s
        if time.monotonic() > deadline:
            warn(f"opening stopped after {args.open_timeout:.0f} s with {len(conns)}/{n} started")
            break
        while len(conns) < n and len(waiting) < args.batch:
            try:
                conn = start_connect(len(conns), args.control_port, sel, args.handshake_timeout)
            except OSError as e:
                if not tally.connect_failed:
                    warn(f"connect: {e} (counted in connect_failed; later ones not shown)")
                tally.connect_failed += 1
                conns.append(Conn(None, 0.0, "dropped"))
                continue
            conns.append(conn)
            waiting.append(conn)
        if len(conns) >= n and not waiting:
            break
        dispatch(sel, 0.1, tally)
        waiting = expire(waiting, sel, tally)
    for conn in waiting:  # left over when a bound was hit
        if conn.state in ("connecting", "hello"):
            tally.timeouts += 1
            drop(conn, sel)
    return conns


def hold(seconds: float, sel: selectors.BaseSelector, tally: Tally) -> None:
    """Read and discard everything for `seconds`."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 1_000_000) + 1000):  # far above the events a window can bring
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        dispatch(sel, min(remaining, 1.0), tally)


def close_all(conns: list[Conn], sel: selectors.BaseSelector) -> None:
    for conn in conns:
        if conn.state != "dropped":
            drop(conn, sel)
    sel.close()


# ---------------------------------------------------------------- one run


def measure(cmd: str, args) -> dict:
    """Start the server, open the tunnels, measure the idle window, stop everything."""
    if port_open(args.control_port):
        raise RuntimeError(
            f"something already listens on {HOST}:{args.control_port}; run in a private network namespace (unshare -n)"
        )
    try:
        server = Server(cmd, args.keep_logs)
    except (OSError, ValueError) as e:  # no such program, or a command shlex cannot split
        raise RuntimeError(f"cannot start the server: {e}") from e
    sel = selectors.DefaultSelector()
    conns: list[Conn] = []
    tally = Tally()
    try:
        server.wait_listening(args.control_port, args.start_timeout)
        t0 = time.monotonic()
        conns = open_tunnels(args.tunnels, args, sel, tally)
        open_s = time.monotonic() - t0
        hold(args.settle, sel, tally)
        tally.heartbeats = 0
        result = window(server, args.seconds, sel, tally, live(conns))
        result.update(cmd=cmd, tunnels=args.tunnels, open_s=round(open_s, 2))
        if exited(server.pid):
            raise RuntimeError(f"server exited during the run:\n{server.log_tail()}")
        return result
    finally:
        close_all(conns, sel)
        server.stop()


def live(conns: list[Conn]) -> int:
    return sum(conn.state == "idle" for conn in conns)


def window(server: Server, seconds: float, sel: selectors.BaseSelector, tally: Tally, idle: int) -> dict:
    """Hold `idle` tunnels for `seconds`; CPU of the server tree and of this process over it."""
    pids = descendants(server.pid)
    s0, g0, w0 = tree_cpu_seconds(pids), self_cpu_seconds(), time.monotonic()
    hold(seconds, sel, tally)
    s1, g1, w1 = tree_cpu_seconds(pids), self_cpu_seconds(), time.monotonic()
    wall = w1 - w0
    return {
        "server_cpu_pct": round(100 * (s1[0] + s1[1] - s0[0] - s0[1]) / wall, 2),
        "server_user_pct": round(100 * (s1[0] - s0[0]) / wall, 2),
        "server_sys_pct": round(100 * (s1[1] - s0[1]) / wall, 2),
        "generator_cpu_pct": round(100 * (g1 - g0) / wall, 2),
        "window_s": round(wall, 2),
        "server_rss_mib": round(rss_kib(server.pid) / 1024, 1),
        "server_open_files": open_files(server.pid),
        "server_processes": len(pids),
        "heartbeats_per_tunnel_s": round(tally.heartbeats / max(idle, 1) / wall, 2),
        "idle_at_start": idle,
        "opened": tally.opened,
        "connect_failed": tally.connect_failed,
        "errors": tally.errors,
        "error_texts": tally.error_texts,
        "timeouts": tally.timeouts,
        "closed": tally.closed,
        "other_frames": tally.other_frames,
    }


# ---------------------------------------------------------------- reporting


def problems(r: dict) -> str:
    bad = [f"{k}={r[k]}" for k in ("connect_failed", "errors", "timeouts", "closed", "other_frames") if r[k]]
    if r["error_texts"]:
        bad.append(f"error texts {r['error_texts']}")
    return ", ".join(bad) or "none"


def print_run(i: int, r: dict) -> None:
    print(
        f"run {i}: {r['cmd']}\n"
        f"  opened {r['opened']}/{r['tunnels']} in {r['open_s']} s; server CPU {r['server_cpu_pct']} % "
        f"of a core (user {r['server_user_pct']}, sys {r['server_sys_pct']}) over {r['window_s']} s; generator {r['generator_cpu_pct']} %; "
        f"RSS {r['server_rss_mib']} MiB; {r['server_open_files']} open files; "
        f"{r['heartbeats_per_tunnel_s']} heartbeats/tunnel/s; problems: {problems(r)}",
        flush=True,
    )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def print_table(cmds: list[str], results: list[dict]) -> None:
    print("\nserver CPU over the idle window, % of one core: median [min-max]")
    head = (
        f"{'tunnels':>8}  {'runs':>4}  {'server CPU %':>18}  {'generator %':>18}  {'RSS MiB':>8}  "
        f"{'failed':>6}  command"
    )
    print(head)
    for cmd in cmds:
        rs = [r for r in results if r["cmd"] == cmd]
        if not rs:
            print(f"{'-':>8}  {0:>4}  {'-':>18}  {'-':>18}  {'-':>8}  {'-':>6}  {cmd}")
            continue
        failed = sum(r["connect_failed"] + r["errors"] + r["timeouts"] + r["closed"] for r in rs)
        print(
            f"{min(r['opened'] for r in rs):>8}  {len(rs):>4}  "
            f"{spread([r['server_cpu_pct'] for r in rs]):>18}  "
            f"{spread([r['generator_cpu_pct'] for r in rs]):>18}  "
            f"{statistics.median(r['server_rss_mib'] for r in rs):>8.1f}  {failed:>6}  {cmd}"
        )


def schedule(cmds: list[str], runs: int) -> list[str]:
    """Every command once per round, the order reversed every other round."""
    order = []
    for i in range(runs):
        order += cmds if i % 2 == 0 else cmds[::-1]
    return order


# ---------------------------------------------------------------- main


def on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    check_namespace()
    raise_nofile(args.tunnels)
    results, failed = [], False
    try:
        for i, cmd in enumerate(schedule(args.server_cmd, args.runs), 1):
            try:
                result = measure(cmd, args)
            except RuntimeError as e:
                print(f"run {i}: {cmd}\n  FAILED: {e}", flush=True)
                failed = True
                continue
            results.append(result)
            print_run(i, result)
            failed |= problems(result) != "none"
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print_table(args.server_cmd, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
