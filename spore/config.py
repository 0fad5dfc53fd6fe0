"""Settings from a JSON file (no Twisted here): read, shape-checked, errors that name file and key.

A file is one JSON object whose keys are a command's long options with ``_``
for ``-`` (``min_port`` for ``--min-port``).  What each value means is
checked later, by the same code that checks the command line.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

Value = str | list[str] | bool


class ConfigError(ValueError):
    """A settings file that cannot be used; the message names the file and the key or line."""


def read(path: str) -> dict[str, object]:
    """The JSON object in the file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must hold a JSON object of settings, like {{\"min_port\": 20000}}")
    return document


def options_from(
    path: str,
    document: Mapping[str, object],
    parameters: Collection[str],
    flags: Collection[str],
    lists: Collection[str] = (),
    aliases: Mapping[str, str] = {},
) -> dict[str, Value]:
    """Map a settings document onto option names, checking only the shape of each value.

    ``parameters`` take a string or a number, ``flags`` true or false, and
    ``lists`` also a list of strings; ``aliases`` maps extra keys to options.
    Numbers come back as strings, as if typed on the command line.
    """
    values: dict[str, Value] = {}
    for key, value in document.items():
        option = aliases.get(key, key.replace("_", "-"))
        where = f"{path}: {key}"
        if "-" in key or option not in {*parameters, *flags}:
            raise ConfigError(f"{path}: unknown key {key!r}")
        if option in flags:
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false")
            values[option] = value
        elif isinstance(value, list) and option in lists:
            if not all(isinstance(item, str) for item in value):
                raise ConfigError(f"{where} must be a list of strings")
            values[option] = value
        elif isinstance(value, str):
            values[option] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[option] = str(value)
        else:
            kind = "a string, a number or a list of strings" if option in lists else "a string or a number"
            raise ConfigError(f"{where} must be {kind}")
    return values
