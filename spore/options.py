"""Helpers shared by the commands' option parsers: environment fallbacks and checks."""

from __future__ import annotations

import getopt
import ipaddress
import os
import sys
from collections.abc import Mapping
from typing import NoReturn

from twisted.python import usage

from spore import __version__


class SporeOptions(usage.Options):
    """Options with Spore's ``--version`` and an environment to fall back on."""

    environ: Mapping[str, str] = os.environ

    def parseOptions(self, options: list[str] | None = None) -> None:
        # Twisted's parser stops at the first argument, but bore's users write
        # 'local 3000 --to HOST': move the arguments after the options.
        options = sys.argv[1:] if options is None else options
        if getattr(self, "subCommands", None):
            return super().parseOptions(options)  # a subcommand's options are its own
        try:
            pairs, arguments = getopt.gnu_getopt(options, self.shortOpt, self.longOpt)
        except getopt.error:
            return super().parseOptions(options)  # let Twisted word the error
        ordered: list[str] = []
        for option, value in pairs:
            if option[2:] + "=" in self.longOpt:
                ordered.append(f"{option}={value}")
            elif not option.startswith("--") and option[1] + ":" in self.shortOpt:
                ordered += [option, value]
            else:
                ordered.append(option)
        super().parseOptions(ordered + ["--"] + arguments)

    def opt_version(self) -> NoReturn:
        """Print Spore's version and exit."""
        print(f"spore {__version__}")
        sys.exit(0)


def fill_from_environment(
    options: usage.Options, environ: Mapping[str, str], names: Mapping[str, tuple[str, ...]]
) -> None:
    """Give each option still unset the value of the first of its variables that is set."""
    for option, variables in names.items():
        if options[option] is None:
            options[option] = next((environ[v] for v in variables if environ.get(v)), None)


def port(value: str | int, option: str, lowest: int = 1) -> int:
    """``value`` as a TCP port number, or a usage error naming ``option``."""
    try:
        number = int(value)
    except ValueError:
        raise usage.UsageError(f"--{option} must be a port number, not {value!r}") from None
    if not lowest <= number <= 65535:
        raise usage.UsageError(f"--{option} must be between {lowest} and 65535, not {number}")
    return number


def count(value: str | int, option: str, lowest: int = 1) -> int:
    """``value`` as a whole number of at least ``lowest``, or a usage error naming ``option``."""
    try:
        number = int(value)
    except ValueError:
        raise usage.UsageError(f"--{option} must be a whole number, not {value!r}") from None
    if number < lowest:
        raise usage.UsageError(f"--{option} must be at least {lowest}, not {number}")
    return number


def positive_seconds(value: str | float, option: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise usage.UsageError(f"--{option} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds < 86400:
        raise usage.UsageError(f"--{option} must be more than 0 seconds and less than a day")
    return seconds


def ip_address(value: str, option: str) -> str:
    """``value`` as an IP address in canonical form, or a usage error."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise usage.UsageError(f"--{option} must be an IP address such as 0.0.0.0 or ::, not {value!r}") from None
