"""The ``spore`` command: ``spore server`` and ``spore local``."""

from __future__ import annotations

import atexit
import sys
from typing import NoReturn

from twisted.logger import FileLogObserver, InvalidLogLevelError, LogLevel, globalLogBeginner, jsonFileLogObserver
from twisted.python import usage

from spore import local_tap, server_tap, status_command
from spore import reactor as spore_reactor
from spore.log_output import CoalescingStream, LogOutput, format_line
from spore.options import SporeOptions


class Options(usage.Options):
    synopsis = "spore [--log-format text|json] [--log-level LEVEL] COMMAND"
    longdesc = "A TCP tunnel that speaks bore's protocol. 'spore COMMAND --help' lists a command's options."
    optParameters = [
        ["log-format", None, "text", "How to write the log to standard error: text or json (one per line)"],
        ["log-level", None, "info", "The least severe events logged: debug, info, warn, error or critical"],
    ]
    opt_version = SporeOptions.opt_version
    subCommands = [
        ["server", None, server_tap.Options, "Run a tunnel server"],
        ["local", None, local_tap.Options, "Expose a local port through a tunnel server"],
        ["status", None, status_command.StatusOptions, "Show a running server's tunnels, from its status page"],
        ["password", None, status_command.PasswordOptions, "Make a line for the status page's password file"],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("choose a command: 'spore server', 'spore local' or 'spore status'")
        if self["log-format"] not in _OBSERVERS:
            raise usage.UsageError(f"--log-format must be text or json, not {self['log-format']!r}")
        try:
            self["log-level"] = LogLevel.levelWithName(self["log-level"])
        except InvalidLogLevelError:
            raise usage.UsageError(
                f"--log-level must be debug, info, warn, error or critical, not {self['log-level']!r}"
            ) from None


_TAPS = {"server": server_tap, "local": local_tap}
_COMMANDS = {"status": status_command.status, "password": status_command.password}  # no reactor, no log
_OBSERVERS = {
    "text": lambda stream: FileLogObserver(stream, format_line),
    "json": lambda stream: jsonFileLogObserver(stream, recordSeparator=""),  # plain JSON lines
}


def _not_retry_chatter(event: dict) -> bool:
    # ClientService announces each retry naming an endpoint object; the
    # client's own warning already says the tunnel was lost and is reconnecting.
    return not (
        event["log_level"] == LogLevel.info
        and event["log_namespace"].startswith("twisted.application._client_service")
    )


def main(argv: list[str] | None = None) -> NoReturn:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        command = f"spore {options.subCommand}" if options.subCommand else "spore"
        sys.stderr.write(f"Error: {e}\nRun '{command} --help' for the options.\n")
        sys.exit(2)
    if options.subCommand in _COMMANDS:
        sys.exit(_COMMANDS[options.subCommand](options.subOptions))

    if spore_reactor.available():
        spore_reactor.install()
    from twisted.internet import reactor

    stream = CoalescingStream(sys.stderr, reactor)
    reactor.addSystemEventTrigger("after", "shutdown", stream.flush_now)
    atexit.register(stream.flush_now)  # a client that failed exits before the reactor shuts down
    observer = _OBSERVERS[options["log-format"]](stream)
    globalLogBeginner.beginLoggingTo(
        [LogOutput(observer, stream, options["log-level"], _not_retry_chatter)], redirectStandardIO=False
    )
    service = _TAPS[options.subCommand].makeService(options.subOptions)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    sys.exit(0)  # a client that failed has already exited with status 1 (LocalService)
