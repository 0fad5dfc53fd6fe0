#!/usr/bin/env python3
"""Summarize a py-spy raw (collapsed stacks) profile of a spore process per tunnelled connection.

    py-spy record -r 1000 -f raw -o server.txt --nonblocking -- python -m spore server ...
    python bench/spy_report.py server.txt --conns 4020 [--rate 1000] [--top 20]

py-spy leaves out samples of a thread asleep in epoll_wait, so a sample is
work, or a process woken and waiting for a CPU (four busy processes share two
cores here): those land in epoll_wait's bucket.  Prints the CPU per connection, split into what each sample was busy
with (the first matching bucket, innermost frame first), and the functions
with most samples of their own and in all.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

# (bucket, pattern on one frame "function (file:line)"); the innermost frame that matches decides.
BUCKETS = [
    ("epoll_wait (and runnable, waiting for a CPU)", r"^EPollReactor\.doPoll "),  # only as the innermost frame
    ("logging (twisted.logger: format, write)", r"twisted/logger/|strftime|_format|formatEvent"),
    ("metrics (prometheus_client)", r"prometheus_client/"),
    ("control frames (json, LineReceiver)", r"spore/messages\.py|json/|protocols/basic\.py"),
    ("uuid", r"uuid\.py"),
    ("timers (callLater, cancel)", r"callLater|DelayedCall|runUntilCurrent|cancel_deadline|set_deadline"),
    ("connect (endpoints, Connector, BaseClient)", r"endpoints\.py|tcp\.py:\d+\)$(?<=Client)|Connector|BaseClient|"
     r"_BaseTCPClient|resolveAddress|doConnect|_connectDone|failIfNotConnected"),
    ("close (loseConnection, shutdown, connectionLost)", r"connectionLost|loseConnection|loseWriteConnection|"
     r"_closeWriteConnection|_disconnectSelectable|readConnectionLost|_closeSocket|shutdown|unregisterProducer"),
    ("accept (Port.doRead, buildProtocol)", r"tcp\.py:1\d\d\d\)|buildProtocol|_buildAddr|Server\.__init__"),
    ("socket send (writeSomeData, doWrite, write_now)", r"writeSomeData|doWrite|_postLoseConnection|write_now|untilConcludes"),
    ("socket recv (doRead, dataReceived)", r"doRead|_dataReceived|dataReceived"),
    ("setsockopt (tune)", r"sockets\.py|setsockopt|setTcpNoDelay"),
    ("deferreds", r"defer\.py"),
    ("spore protocol logic", r"spore/"),
    ("reactor loop (epoll bookkeeping, dispatch)", r"twisted/"),
]


GENERIC = 2  # the last buckets apply only when no frame matches a specific one


def classify(frames: list[str]) -> str:
    for group in (BUCKETS[:-GENERIC], BUCKETS[-GENERIC:]):
        for depth, frame in enumerate(reversed(frames)):
            for name, pattern in group:
                if (depth == 0 or not pattern.startswith("^")) and re.search(pattern, frame):
                    return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--conns", type=int, required=True, help="tunnelled connections made while recording")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy's samples per second")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    buckets: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(args.profile) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            if any("_find_and_load" in fr for fr in frames):
                continue  # start-up imports
            total += n
            own[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
            buckets[classify(frames)] += n
    per = 1e6 / args.rate / args.conns  # microseconds per sample per connection
    print(f"{args.profile}: {total} busy samples, {total * per:,.0f} us per connection on a CPU or waiting for one "
          f"({args.conns} connections)")
    print("\n  what the samples were busy with     us/conn   share")
    for name, n in buckets.most_common():
        print(f"  {name:48s} {n * per:7.1f}  {n / total:6.1%}")
    for title, counter in (("own samples (innermost frame)", own), ("inclusive samples", inclusive)):
        print(f"\n  top {args.top} by {title}: us/conn  function")
        for frame, n in counter.most_common(args.top):
            frame = re.sub(r"/[^ ]*/(site-packages|spore-[a-z]+|lib/python3\.\d+)/", "", frame)
            print(f"  {n * per:8.1f}  {frame}")


if __name__ == "__main__":
    main()
