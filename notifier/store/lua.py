"""The store's Lua scripts, read from the .lua files in scripts/ that ship with the package.

Each file starts with a comment header naming its KEYS, ARGV and return value. A line
`-- include: _clock.lua _move.lua` in that header names helper files (their names start with
an underscore: they define local functions and do nothing alone); their text is put before
the script's, so Redis runs one self-contained chunk.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

INCLUDE = "-- include:"


def _read(name: str) -> str:
    return files("notifier.store").joinpath("scripts").joinpath(name).read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The runnable source of scripts/`name` (e.g. "claim.lua"): its helpers, then itself."""
    body = _read(name)
    helpers: list[str] = []
    for line in body.splitlines():
        if not line.startswith("--"):
            break  # the header ends at the first line of code
        if line.startswith(INCLUDE):
            helpers += line.removeprefix(INCLUDE).split()
    return "".join(_read(h) for h in helpers) + body
