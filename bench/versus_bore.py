#!/usr/bin/env python3
"""Spore beside stock bore in one session: how each pairing does, divided by bore's own figures.

Absolute figures drift by up to 2x between machines and runs, so the only
fair comparison is with bore measured next to Spore.  For each of --runs runs
and each pair, this runs the reference (bore client and bore server) and then
the pair, one after the other, each measured by the neutral harness
(../shared/bench/tunnel_bench.py --skip idle) and by bench/interactive.py
(unless --skip-interactive).  Every benchmark reports tunnel/direct ratios;
the figure for a pair in a run is its ratio divided by the ratio of the bore
run just before it:

  sequential conn/s, 50 concurrent conn/s, throughput,
  interactive held tx/s, interactive per-connection tx/s   bigger is better
  first-byte p50 (sequential; p50 tunnel/direct)            bigger is worse

So "0.95 × bore" for throughput means the pair moved 95% of what bore moved
relative to direct loopback in the same minute.  The pairs (--pairs):

  spore        Spore client, Spore server
  bore-spore   bore client, Spore server
  spore-bore   Spore client, bore server

Output: a markdown table (a row per pair, "median × bore [min-max]" over the
runs, and a row with bore's own tunnel/direct ratios), then one line of JSON
with those figures and the errors; --json FILE writes every raw run too.  The
exit status is 1 if any benchmark failed (interactive.py fails on any wrong
reply) or a figure is missing.

bore's control port is fixed at 7835, so run this in a private network
namespace; it stops at once if port 7835 is taken:

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/versus_bore.py --quick --runs 1'

One run of one pair (bore, then the pair) takes about a minute with --quick.
At the default sizes it takes about 4 (the harness's phases, then 80 s of
interactive runs, for each of the two), so the default 3 runs of 3 pairs take
about 35 minutes (34 measured).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
CONTROL_PORT = 7835
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERACTIVE = os.path.join(REPO, "bench", "interactive.py")
PAIRS = {  # name: (description, client, server)
    "spore": ("Spore client, Spore server", "spore", "spore"),
    "bore-spore": ("bore client, Spore server", "bore", "spore"),
    "spore-bore": ("Spore client, bore server", "spore", "bore"),
}
FIGURES = (  # key, column title, benchmark, where its tunnel/direct ratio is in that benchmark's summary
    ("seq_conn_per_s", "sequential conn/s", "harness", ("sequential", "ratios", "conn_per_s")),
    ("conc_conn_per_s", "50 concurrent conn/s", "harness", ("concurrent", "ratios", "conn_per_s")),
    ("throughput", "throughput", "harness", ("throughput_MBps", "ratio")),
    ("first_byte_p50", "first-byte p50 (bigger is worse)", "harness", ("sequential", "ratios", "p50")),
    ("held_tps", "interactive held tx/s", "interactive", ("held", "ratio")),
    ("per_connection_tps", "interactive per-connection tx/s", "interactive", ("per_connection", "ratio")),
)

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def prepare_child() -> None:
    """Run in a benchmark's process before exec, so that SIGINT stops it cleanly, from us or the kernel.

    A benchmark stops its tunnel and service on SIGINT: restore its default
    handling (a shell's background job ignores it), and have the kernel send it
    if we die (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _prctl is not None:
        _prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------
# Processes.
# --------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo and len(found) < 10000:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def stop(popen: subprocess.Popen) -> None:
    """SIGINT a benchmark (it stops its tunnel and service on that), then SIGKILL whatever of it is left."""
    if popen.poll() is not None:
        return
    below = descendants(popen.pid)  # its tunnel programs run in sessions of their own: note them now
    popen.send_signal(signal.SIGINT)
    try:
        popen.wait(15)
        return
    except subprocess.TimeoutExpired:
        pass
    for pid in [popen.pid, *below]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    popen.wait(5)


def run_benchmark(argv: list[str], timeout: float) -> tuple[dict | None, str]:
    """Run one benchmark that writes its JSON to the file after ``--out``; that JSON and a note if it failed."""
    with tempfile.TemporaryDirectory(prefix="versus-bore-") as tmp:
        out = os.path.join(tmp, "result.json")
        with open(os.path.join(tmp, "output"), "w+b") as log:
            popen = subprocess.Popen([*argv, "--out", out], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=prepare_child)  # noqa: PLW1509 (no threads here)
            try:
                popen.wait(timeout)
                note = "" if popen.returncode == 0 else f"exit status {popen.returncode}"
            except subprocess.TimeoutExpired:
                note = f"stopped after {timeout:.0f} s"
            finally:
                stop(popen)
            log.seek(0)
            tail = log.read()[-1500:].decode(errors="replace")
        try:
            with open(out) as f:
                result = json.load(f)
        except (OSError, ValueError):
            result = None
    if result is None and not note:
        note = "no result"
    return result, f"{note}; its output ended:\n{tail}" if note else ""


def control_port_free() -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, CONTROL_PORT))
            sock.listen(1)
        except OSError:
            return False
    return True


def wait_control_port(seconds: float) -> bool:
    """Whether port 7835 is free (waiting up to ``seconds`` for the last tunnel server to let go)."""
    end = time.monotonic() + seconds
    for _ in range(int(seconds / 0.1) + 1):
        if control_port_free():
            return True
        if time.monotonic() > end:
            break
        time.sleep(0.1)
    return False


def version(cmd: str) -> str:
    try:
        done = subprocess.run([*shlex.split(cmd), "--version"], capture_output=True, text=True, timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


# --------------------------------------------------------------------------
# Runs and figures.
# --------------------------------------------------------------------------


def tunnel_commands(bore: str, spore: str, names: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """Server and client command templates of each implementation; ``names``: the clients are given host names."""
    ports = "--min-port 20000 --max-port 29999"
    servers = {"bore": f"{bore} server {ports}", "spore": f"{spore} server {ports}"}
    to, local = ("localhost", "") if names else (HOST, f" --local-host {HOST}")
    clients = {
        "bore": f"{bore} local {{local_port}} --to {to}{local}",
        "spore": f"{spore} local {{local_port}} --to {to}{local}",
    }
    return servers, clients


def dig(doc: dict | None, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc if isinstance(doc, (int, float)) else None


def measure(args: argparse.Namespace, server_cmd: str, client_cmd: str) -> dict:
    """One tunnel's harness run and interactive run: the raw results, the tunnel/direct ratios, the errors."""
    quick = ["--quick"] if args.quick else []
    tunnel = ["--server-cmd", server_cmd, "--client-cmd", client_cmd]
    plan = [("harness", [sys.executable, args.harness, "--skip", "idle", *tunnel, *quick], 100 if args.quick else 240)]
    if not args.skip_interactive:
        plan.append(("interactive", [sys.executable, INTERACTIVE, *tunnel, *quick], 100 if args.quick else 160))
    run: dict = {"server_cmd": server_cmd, "client_cmd": client_cmd, "errors": [], "failed": False}
    for name, argv, timeout in plan:
        result, note = None, f"not run: port {CONTROL_PORT} is still taken"
        if wait_control_port(10):
            result, note = run_benchmark(argv, timeout)
        run[name] = result
        if note:
            run["failed"] = True
            run["errors"].append(f"{name}: {note}")
        run["errors"] += [f"{name}: {e}" for e in (result or {}).get("errors", [])]
    run["ratios"] = {key: dig((run[bench] or {}).get("summary"), path)
                     for key, _, bench, path in FIGURES if bench in run}
    return run


def relative(pair: dict, reference: dict) -> dict:
    """The pair's ratios divided by the reference's."""
    out = {}
    for key, value in pair["ratios"].items():
        base = reference["ratios"].get(key)
        out[key] = round(value / base, 4) if value is not None and base else None
    return out


def spread(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": round(statistics.median(values), 4), "min": min(values), "max": max(values), "values": values}


def figures(runs: list[dict], pairs: list[str], keys: list[str]) -> tuple[dict, dict]:
    """Per pair, each figure over the runs; and bore's own tunnel/direct ratios over its runs."""
    per_pair = {p: {k: spread([r["vs_bore"][k] for r in runs if r["pair"] == p and r["role"] == "pair"])
                    for k in keys} for p in pairs}
    reference = {k: spread([r["ratios"].get(k) for r in runs if r["role"] == "reference"]) for k in keys}
    return per_pair, reference


def table(per_pair: dict, reference: dict, keys: list[str], header: str) -> str:
    titles = {key: title for key, title, _, _ in FIGURES}

    def cell(s: dict, suffix: str) -> str:
        if s["median"] is None:
            return "-"
        return f"{s['median']:.2f}{suffix} [{s['min']:.2f}-{s['max']:.2f}]"

    lines = [header, "", "| pair | " + " | ".join(titles[k] for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for pair, figs in per_pair.items():
        lines.append(f"| {pair} ({PAIRS[pair][0]}) | " + " | ".join(cell(figs[k], " × bore") for k in keys) + " |")
    lines.append("| bore reference: its tunnel/direct | " + " | ".join(cell(reference[k], "") for k in keys) + " |")
    return "\n".join(lines)


def exit_on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)  # so that the running benchmark is stopped on the way out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bore", default=os.path.normpath(os.path.join(REPO, "../shared/bore/bore-0.5")),
                        help="stock bore executable (default %(default)s)")
    parser.add_argument("--spore", metavar="CMD", help="command that runs spore (default: spore on PATH, "
                        "else python -m spore with this Python)")
    parser.add_argument("--harness", default=os.path.normpath(os.path.join(REPO, "../shared/bench/tunnel_bench.py")),
                        help="the neutral harness (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of every pair, each beside its own bore run "
                        "(default 3)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to both benchmarks")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma list of %(default)s")
    parser.add_argument("--skip-interactive", action="store_true", help="the harness only")
    parser.add_argument("--json", metavar="FILE", help="also write every raw run here")
    parser.add_argument("--names", action="store_true", help="give both clients host names, as most users do: "
                        "--to localhost, and the default local host (localhost), instead of 127.0.0.1")
    args = parser.parse_args()
    pairs = [p for p in args.pairs.split(",") if p]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown or not pairs:
        parser.error(f"--pairs: unknown {', '.join(unknown) or 'nothing'}; choose from {', '.join(PAIRS)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not (os.path.isfile(args.bore) and os.access(args.bore, os.X_OK)):
        sys.exit(f"versus_bore.py: no bore executable at {args.bore}; give one with --bore PATH")
    if not os.path.isfile(args.harness):
        sys.exit(f"versus_bore.py: no harness at {args.harness}; give it with --harness PATH")
    if not control_port_free():
        sys.exit(f"versus_bore.py: port {CONTROL_PORT} (bore's fixed control port) is taken. Run this in a private "
                 "network namespace: unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/versus_bore.py ...'")
    spore = args.spore or (shlex.quote(shutil.which("spore")) if shutil.which("spore")
                           else shlex.join([sys.executable, "-m", "spore"]))
    bore = shlex.quote(args.bore)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_on_signal)

    servers, clients = tunnel_commands(bore, spore, args.names)
    keys = [k for k, _, bench, _ in FIGURES if bench == "harness" or not args.skip_interactive]
    config = {"bore": args.bore, "bore_version": version(bore), "spore": spore, "spore_version": version(spore),
              "harness": args.harness, "runs": args.runs, "quick": args.quick, "pairs": pairs,
              "interactive": not args.skip_interactive, "names": args.names, "cpus": os.cpu_count()}
    runs: list[dict] = []
    started = time.monotonic()
    total = 2 * args.runs * len(pairs)
    for rep in range(args.runs):
        for pair in pairs:
            _, client, server = PAIRS[pair]
            for role, c, s in (("reference", "bore", "bore"), ("pair", client, server)):
                t0 = time.monotonic()
                run = {"run": rep + 1, "pair": pair, "role": role, "client": c, "server": s,
                       **measure(args, servers[s], clients[c])}
                run["seconds"] = round(time.monotonic() - t0, 1)
                if role == "pair":
                    run["vs_bore"] = relative(run, runs[-1])
                runs.append(run)
                print(f"[{len(runs)}/{total}] run {rep + 1}, {pair if role == 'pair' else 'bore reference'} "
                      f"({c} client, {s} server): {run['seconds']:.0f} s, {len(run['errors'])} errors",
                      file=sys.stderr, flush=True)
    per_pair, reference = figures(runs, pairs, keys)
    header = (f"Spore ({config['spore_version']}) against {config['bore_version']}, {args.runs} run(s) per pair"
              f"{', --quick' if args.quick else ''}: each pair's tunnel/direct ratio ÷ that of the bore run "
              "beside it (first-byte p50: bigger is worse; the rest: bigger is better)")
    print(table(per_pair, reference, keys, header))
    errors = [f"run {r['run']} {r['pair']} {r['role']}: {e}" for r in runs for e in r["errors"]]
    missing = [f"run {r['run']} {r['pair']} {r['role']}: no {k}" for r in runs for k in keys
               if r["ratios"].get(k) is None]
    elapsed = round(time.monotonic() - started, 1)
    print(json.dumps({"figures": per_pair, "reference": reference, "errors": errors + missing,
                      "elapsed_s": elapsed}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config, "figures": per_pair, "reference": reference, "runs": runs,
                       "elapsed_s": elapsed}, f, indent=1)
            f.write("\n")
    return 1 if missing or any(r["failed"] for r in runs) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the running benchmark has been stopped
        sys.exit(130)
