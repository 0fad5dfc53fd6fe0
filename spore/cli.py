"""The ``spore`` command: ``spore server`` and ``spore local``."""

from __future__ import annotations

import sys
from typing import NoReturn

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage

from spore import local_tap, server_tap
from spore.options import SporeOptions


class Options(SporeOptions):
    synopsis = "spore"
    longdesc = "A TCP tunnel that speaks bore's protocol. 'spore COMMAND --help' lists a command's options."
    subCommands = [
        ["server", None, server_tap.Options, "Run a tunnel server"],
        ["local", None, local_tap.Options, "Expose a local port through a tunnel server"],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("choose a command: 'spore server' or 'spore local'")


_TAPS = {"server": server_tap, "local": local_tap}


def main(argv: list[str] | None = None) -> NoReturn:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        command = f"spore {options.subCommand}" if options.subCommand else "spore"
        sys.stderr.write(f"Error: {e}\nRun '{command} --help' for the options.\n")
        sys.exit(2)

    from twisted.internet import reactor

    observer = textFileLogObserver(sys.stderr)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [LogLevelFilterPredicate(LogLevel.info)])],
        redirectStandardIO=False,
    )
    service = _TAPS[options.subCommand].makeService(options.subOptions)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    sys.exit(getattr(service, "exit_status", 0))
