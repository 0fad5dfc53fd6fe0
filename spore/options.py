"""What the commands' option parsers share: where values come from, and their checks."""

from __future__ import annotations

import getopt
import ipaddress
import os
import sys
from collections.abc import Collection, Mapping
from typing import NoReturn

from twisted.python import usage

from spore import __version__, config


class SporeOptions(usage.Options):
    """A command's options: its flags, then the environment, then a --config file, then defaults.

    Subclasses declare ``environment`` (option -> variables, first set wins),
    ``default_values`` (option -> value as typed), and for the config file
    ``config_lists`` (options that may be given as a JSON list) and
    ``config_aliases`` (extra key -> option); then build their settings in
    ``configure()``, where ``label(option)`` names where a bad value came from.
    """

    environ: Mapping[str, str] = os.environ
    environment: Mapping[str, tuple[str, ...]] = {}
    default_values: Mapping[str, str] = {}
    config_lists: Collection[str] = ()
    config_aliases: Mapping[str, str] = {}
    config_path: str | None = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # Say each default and variable in --help, from the one declaration.
        described = []
        for name, short, default, doc, *rest in getattr(cls, "optParameters", []):
            extra = [f"default: {cls.default_values[name]}"] if name in cls.default_values else []
            extra += [f"env {' or '.join(cls.environment[name])}"] if name in cls.environment else []
            described.append([name, short, default, f"{doc} [{'; '.join(extra)}]" if extra else doc, *rest])
        cls.optParameters = described

    def opt_config(self, path: str) -> None:
        """JSON file of settings, keyed by long option with _ for - (the command line and environment win)"""
        self.config_path = path

    def opt_version(self) -> NoReturn:
        """Print Spore's version and exit."""
        print(f"spore {__version__}")
        sys.exit(0)

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

    def postOptions(self) -> None:
        parameters = [p[0] for p in self.optParameters]
        flags = [f[0] for f in getattr(self, "optFlags", [])]
        self.sources = {name: f"--{name}" for name in parameters if self[name] is not None}
        from_file: Mapping[str, object] = {}
        if self.config_path:
            try:
                document = config.read(self.config_path)
                from_file = config.options_from(
                    self.config_path, document, parameters, flags, self.config_lists, self.config_aliases
                )
            except config.ConfigError as e:
                raise usage.UsageError(str(e)) from None
        keys = {option: key for key, option in self.config_aliases.items()}
        for name in parameters:
            if self[name] is not None:
                continue
            variable = next((v for v in self.environment.get(name, ()) if self.environ.get(v)), None)
            if variable:
                self[name], self.sources[name] = self.environ[variable], variable
            elif name in from_file:
                key = keys.get(name, name.replace("-", "_"))
                self[name], self.sources[name] = from_file[name], f"{self.config_path}: {key}"
            else:
                self[name] = self.default_values.get(name)
        for name in flags:
            self[name] = bool(self[name] or from_file.get(name))
        self.configure()

    def configure(self) -> None:
        """Check the values and build what the command needs from them."""

    def label(self, name: str) -> str:
        """Where the value of option ``name`` came from, to name it in an error."""
        return self.sources.get(name, f"--{name}")

    def port(self, name: str, lowest: int = 1) -> int:
        return port(self[name], self.label(name), lowest)

    def count(self, name: str, lowest: int = 1) -> int:
        return count(self[name], self.label(name), lowest)

    def seconds(self, name: str) -> float:
        return positive_seconds(self[name], self.label(name))

    def ip_address(self, name: str) -> str:
        return ip_address(self[name], self.label(name))


def port(value: str | int, label: str, lowest: int = 1) -> int:
    """``value`` as a TCP port number, or a usage error naming ``label``."""
    number = count(value, label, lowest)
    if number > 65535:
        raise usage.UsageError(f"{label} must be between {lowest} and 65535, not {number}")
    return number


def count(value: str | int, label: str, lowest: int = 1) -> int:
    """``value`` as a whole number of at least ``lowest``, or a usage error naming ``label``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"{label} must be a whole number, not {value!r}") from None
    if number < lowest:
        raise usage.UsageError(f"{label} must be at least {lowest}, not {number}")
    return number


def positive_seconds(value: str | float, label: str) -> float:
    """``value`` as seconds, more than none and less than a day, or a usage error naming ``label``."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"{label} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds < 86400:
        raise usage.UsageError(f"{label} must be more than 0 seconds and less than a day")
    return seconds


def ip_address(value: str, label: str) -> str:
    """``value`` as an IP address in canonical form, or a usage error naming ``label``."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise usage.UsageError(f"{label} must be an IP address such as 0.0.0.0 or ::, not {value!r}") from None
