"""The open-file limit: every tunnelled connection holds two sockets in the server and two in the client."""

from __future__ import annotations

import resource

FILES_PER_CONNECTION = 2
"""Sockets a tunnelled connection holds in each process: visitor and data (server), data and local (client)."""

RESERVED_FILES = 64
"""Files a process needs besides its tunnelled connections: listeners, control connections, logs, the reactor."""

# When the hard limit is unlimited the soft one cannot be: Linux caps it at
# fs.nr_open (2**20 by default), macOS at OPEN_MAX (10240).  Try these in turn.
_UNLIMITED_CANDIDATES = (1 << 20, 1 << 16, 10240)

# A privileged process (root, or CAP_SYS_RESOURCE) may raise its hard limit
# too, as HAProxy and nginx do; try these in turn when the hard limit is lower.
_PRIVILEGED_HARD_CANDIDATES = (1 << 20, 1 << 16)


def files_for(connections: int) -> int:
    """The open files a server or a client needs to hold ``connections`` tunnelled connections at once."""
    return FILES_PER_CONNECTION * connections + RESERVED_FILES


def raise_open_file_limit(wanted: int | None = None) -> tuple[int, int, str | None]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit.

    The default soft limit (often 1024) is what caps a tunnel's concurrent
    connections, long before memory does; the hard limit is what an
    administrator allows, and a privileged process raises that one too.
    ``wanted`` is the number of open files the caller expects to need (see
    :func:`files_for`).  Returns ``(soft, hard, warning)``: the limits now in
    force, and a sentence for the log when they fall short of ``wanted`` or
    could not be raised, else None.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = _raise_hard_limit(soft, hard)
    targets = _UNLIMITED_CANDIDATES if hard == resource.RLIM_INFINITY else (hard,)
    failure: Exception | None = None
    for target in targets:
        if soft == resource.RLIM_INFINITY or soft >= target:
            break  # never lower it
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            failure = e
            continue
        soft, failure = target, None
        break
    return soft, hard, _warning(soft, hard, wanted, failure)


def _raise_hard_limit(soft: int, hard: int) -> int:
    """The hard limit after trying to raise it, which only a privileged process may do."""
    for target in _PRIVILEGED_HARD_CANDIDATES:
        if hard == resource.RLIM_INFINITY or hard >= target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, target))
        except (ValueError, OSError):
            continue  # unprivileged (ValueError), or above fs.nr_open
        return target
    return hard


def _warning(soft: int, hard: int, wanted: int | None, failure: Exception | None) -> str | None:
    unlimited = resource.RLIM_INFINITY
    if wanted is not None and hard != unlimited and hard < wanted:
        connections = max(0, (wanted - RESERVED_FILES) // FILES_PER_CONNECTION)
        return (
            f"the open-file hard limit is {hard}; holding {connections} connections needs about {wanted} "
            f"open files (2 per connection): raise it with ulimit -Hn or LimitNOFILE="
        )
    if failure is not None:
        return f"could not raise the open-file limit from {soft} towards {hard}: {failure}"
    if wanted is not None and soft != unlimited and soft < wanted:
        return f"the open-file limit is {soft}, below the {wanted} open files wanted: raise it with ulimit -n"
    return None


def announce_open_file_limit(log) -> int | None:
    """Raise the open-file limit and say, on ``log`` (a twisted Logger), what it allows: the limit now, if any."""
    soft, hard, warning = raise_open_file_limit()
    if warning:
        log.warn("{warning}", warning=warning)
    elif soft != resource.RLIM_INFINITY:
        log.info(
            "open-file limit {soft}: room for about {connections} tunnelled connections",
            soft=soft, connections=max(0, (soft - RESERVED_FILES) // FILES_PER_CONNECTION),
        )
    return None if soft == resource.RLIM_INFINITY else soft
