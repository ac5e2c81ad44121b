"""Decoding Redis replies."""

from __future__ import annotations


def text(value: bytes | str | object) -> str:
    """A Redis reply as str (the client returns bytes; its type hints allow str too)."""
    return value.decode() if isinstance(value, bytes) else str(value)
