#!/usr/bin/env python3
"""Whom a full control port should shed: measured with a real client on a slow link during a flood.

A flood from 250 loopback addresses holds and refreshes 2,000 silent
connections to a ``spore server --tls --secret``.  Meanwhile a bore client
reaches the server through a relay that gives it a round-trip time of
``--rtt`` and opens a tunnel (TCP, TLS 1.3, the secret's challenge: about
three round trips), ``--tries`` times.  The server runs one of three
shedding policies (the first two are patched in for the comparison):

- ``oldest``: shed the connection that arrived first;
- ``stalled``: shed the one that has gone longest without progress (a TLS
  handshake completed, a frame read);
- ``spore``: as shipped: ``stalled``, among the connections of the source
  that holds the most slots.

It prints, per policy and round trip, how many tries opened a tunnel and
their median time.  Run it from a checkout, with Spore installed, in a
private network namespace:

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/flood_bench.py'
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.certs import make_pki  # noqa: E402
from tests.flood import ConnectionFlood, sources, time_to_tunnel  # noqa: E402
from tests.processes import Processes  # noqa: E402
from tests.relay import SlowLink  # noqa: E402

PATCHES = {
    "oldest": (
        "A.progressed = lambda self, c: None\n"
        "A._victim = lambda self, newcomer: next(iter(self._order), None)\n"
    ),
    "stalled": "A._victim = lambda self, newcomer: next(iter(self._order), None)\n",
    "spore": "",
}

RUN = (
    "import sys\n"
    "from spore.admission import Admission as A\n"
    "{patch}"
    "from spore.cli import main\n"
    "sys.exit(main())\n"
)


def measure(policy: str, rtt: float, tries: int, pki) -> dict:
    processes = Processes()
    try:
        server = processes.start(
            sys.executable, "-c", RUN.format(patch=PATCHES[policy]), "server",
            "--listen", "tcp:0:interface=127.0.0.1", "--bind-tunnels", "127.0.0.1",
            "--tls", "--certfile", pki.server[0], "--keyfile", pki.server[1], "--secret", "s3cret",
        )
        port = int(server.wait_for(r"server listening on 127\.0\.0\.1:(\d+)", stream="stderr").group(1))
        link = SlowLink(port, rtt)
        tls = ssl.create_default_context(cafile=pki.ca)
        times, failures = [], 0
        try:
            with ConnectionFlood(port, sources(250), 8) as flood:
                started = time.monotonic()
                deadline = time.monotonic() + 10
                while flood.stats.closed_by_server < 3000 and time.monotonic() < deadline:
                    time.sleep(0.05)
                for _ in range(tries):
                    try:
                        times.append(time_to_tunnel(link.port, "s3cret", tls=tls))
                    except (AssertionError, OSError, ssl.SSLError):
                        failures += 1
                stats = flood.stop()
                seconds = time.monotonic() - started
        finally:
            link.close()
        return {
            "policy": policy, "rtt_ms": round(rtt * 1000), "opened": len(times), "tries": tries,
            "p50_s": round(statistics.median(times), 3) if times else None,
            "flood_closed_per_s": round(stats.closed_by_server / seconds),
        }
    finally:
        processes.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt", type=float, nargs="+", default=[0.1, 0.3], help="round-trip times, seconds")
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--policies", nargs="+", default=list(PATCHES), choices=list(PATCHES))
    args = parser.parse_args()
    pki = make_pki(Path(tempfile.mkdtemp()))
    results = [measure(policy, rtt, args.tries, pki) for rtt in args.rtt for policy in args.policies]
    print(f"{'policy':8} {'RTT':>6} {'opened':>8} {'p50':>7}")
    for r in results:
        p50 = f"{r['p50_s']:.2f} s" if r["p50_s"] is not None else "-"
        print(f"{r['policy']:8} {r['rtt_ms']:>4}ms {r['opened']:>3}/{r['tries']:<4} {p50:>7}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
