#!/usr/bin/env python3
"""Run a module under cProfile timed by this thread's CPU clock, not the wall clock.

    python bench/cpu_profile.py OUT.prof spore server ...

With 2 cores and four busy processes (client, server, spore local, service),
a send() on loopback that wakes another process often returns only after that
process has run: the wall clock would charge it to send().  The CPU clock
charges each function what it cost this process.  The profile is written when
the module exits (SIGINT stops Twisted's reactor cleanly).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *argv = sys.argv[1:]
    sys.argv = [module, *argv]
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
