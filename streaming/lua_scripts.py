"""Redis Lua scripts, kept as .lua files in a package's `scripts/` folder and loaded once.

A script is its library files (local functions) followed by its body; the body names its KEYS
and ARGV as locals at the top. The constants a script reads (key prefixes, field names, bucket
bounds) are declared in a header of `local NAME = value` lines made from the Python constants
modules, so every key is spelt in one place. Python passes per-call values as KEYS and ARGV and
never edits the files' text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources import files
from typing import Any


def lua_literal(value: Any) -> str:
    """A Lua literal for a constant: a string, number, boolean, or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"a Lua constant must be printable ASCII: {value!r}")
        return json.dumps(value)  # for printable ASCII, a valid Lua string literal
    if isinstance(value, list | tuple):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def read_lua(package: str, name: str) -> str:
    """The text of `<package>/scripts/<name>`."""
    return files(package).joinpath("scripts", name).read_text(encoding="utf-8")


def build_script(sources: list[str], constants: Mapping[str, Any] | None = None) -> str:
    """One script: the constants' header, then the sources (libraries first, the body last)."""
    header = "".join(f"local {name} = {lua_literal(value)}\n"
                     for name, value in (constants or {}).items())
    return header + "\n".join(sources)


EVENTS_LIBRARY = read_lua("streaming", "events.lua")  # the event log's append and wire format
