#!/usr/bin/env python3
"""Summarize a cProfile file of a spore process per tunnelled connection.

    python bench/profile_report.py server.prof [--conns N] [--top 25]

The number of tunnelled connections is taken from the profile itself (calls
of the function that starts each one: the visitor's connectionMade in the
server, the data protocol's __init__ in the client) unless --conns is given.
Prints the calls, the time, and the top functions by own time and by
cumulative time, each per connection.
"""

from __future__ import annotations

import argparse
import pstats

# (file ends with, line-independent function name) that runs once per tunnelled connection
MARKERS = (("spore/server.py", "visitor_arrived"), ("spore/local.py", "visitor_arrived"))


def connections(stats: pstats.Stats) -> int | None:
    for (path, _, name), (cc, nc, *_rest) in stats.stats.items():
        for suffix, marker in MARKERS:
            if path.endswith(suffix) and name == marker:
                return nc
    return None


def short(func: tuple[str, int, str]) -> str:
    path, line, name = func
    for root in ("site-packages/", "spore-", "/lib/python3"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    if path.startswith(("head/", "prev/", "proto")):
        path = path.split("/", 1)[1]
    return f"{path}:{line}({name})" if line else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--conns", type=int)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stats = pstats.Stats(args.profile)
    n = args.conns or connections(stats) or 1
    # The reactor's idle wait is not work: leave epoll_wait out of the totals.
    idle = sum(tt for (path, _, name), (_, _, tt, _, _) in stats.stats.items() if "poll" in name and path == "~")
    busy = stats.total_tt - idle
    print(f"{args.profile}: {n} tunnelled connections")
    print(f"  function calls {stats.total_calls:,} ({stats.total_calls / n:,.0f} per connection)")
    print(f"  profiled time busy {busy:.2f} s ({busy / n * 1e6:,.0f} us per connection), "
          f"waiting in epoll {idle:.2f} s")
    rows = [(func, *values) for func, values in stats.stats.items()]
    for title, key in (("own time", 3), ("cumulative time", 4)):
        print(f"\n  top {args.top} by {title}: calls/conn  own us/conn  cum us/conn  function")
        for func, cc, nc, tt, ct, _ in sorted(rows, key=lambda r: r[key], reverse=True)[: args.top]:
            print(f"  {nc / n:10.1f}  {tt / n * 1e6:11.1f}  {ct / n * 1e6:11.1f}  {short(func)}")


if __name__ == "__main__":
    main()
