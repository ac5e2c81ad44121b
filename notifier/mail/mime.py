"""Lean MIME writing for one fixed message shape. Pure; no parsing on the way out.

The standard library's EmailMessage API re-parses and refolds every header through its
header registry, and its quoted-printable encoder is pure Python: together most of composing
a mail (measured with cProfile; the figures are in bench/README.md). Here the stdlib's
encoders still do the encoding (email.header.Header for RFC 2047 words, binascii for
quoted-printable and base64); only the assembly is ours. Tests parse every kind of message
back with the stdlib parser in strict mode and with property-based inputs.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from email.header import Header
from email.utils import quote
from functools import lru_cache

CRLF = b"\r\n"
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")

Headers = Sequence[tuple[str, str]]


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", CRLF)


def quoted_printable(text: str) -> bytes:
    """UTF-8 text as quoted-printable with CRLF lines of at most 76 characters.

    Encoded line by line, each line remembered: the mails of a batch share all but a few
    lines, and quoted-printable encodes every line on its own (soft breaks stay inside it).
    """
    return CRLF.join(map(_qp_line, text.replace("\r\n", "\n").split("\n")))


@lru_cache(maxsize=4096)
def _qp_line(line: str) -> bytes:
    return _crlf(binascii.b2a_qp(line.encode("utf-8"), istext=True))


def base64_lines(data: bytes) -> bytes:
    return _crlf(base64.encodebytes(data))


@lru_cache(maxsize=256)
def header_text(name: str, value: str) -> str:
    """An unstructured header value (Subject): RFC 2047 words where it is not plain ASCII.

    Text that merely looks like an encoded word ("=?...?=") is encoded too, so a reader never
    decodes something the sender did not encode.
    """
    value = _CONTROLS.sub(" ", value)
    if value.isascii() and "=?" not in value and len(name) + len(value) < 76:
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def mailbox(name: str, address: str, *, utf8: bool = False) -> str:
    """'Display Name <local@domain>' with the name quoted or encoded as RFC 5322/2047 need.

    With utf8 (SMTPUTF8, RFC 6532) non-ASCII is written as is.
    """
    name = " ".join(_CONTROLS.sub(" ", name).split())
    if not name:
        return f"<{address}>"
    if (name.isascii() or utf8) and "=?" not in name:
        shown = f'"{quote(name)}"' if _SPECIALS.search(name) else name
    else:
        shown = encoded_words(name)
    return f"{shown} <{address}>"


_WORD_BYTES = 45  # base64 of 45 bytes is 60 characters: a 72-character encoded word


def encoded_words(text: str) -> str:
    """RFC 2047 base64 encoded words for a phrase, folded one word to a line, never
    splitting a character. (email.header.Header does the same at a much higher cost;
    a batch encodes every recipient's name.)"""
    data = text.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character
            end -= 1
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode()}?=")
        start = end
    return "\r\n ".join(words)


def part(headers: Headers, body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("utf-8") + CRLF + body


def multipart(subtype: str, boundary: str, parts: Sequence[bytes], headers: Headers = ()) -> bytes:
    """A multipart entity; `boundary` must not occur in the parts (see compose's choice)."""
    sep = f"--{boundary}".encode("ascii")
    body = b"".join(sep + CRLF + p + CRLF for p in parts) + sep + b"--" + CRLF
    content_type = f'multipart/{subtype}; boundary="{boundary}"'
    return part([*headers, ("Content-Type", content_type)], body)


def text_part(subtype: str, text: str) -> bytes:
    return part(
        [
            ("Content-Type", f'text/{subtype}; charset="utf-8"'),
            ("Content-Transfer-Encoding", "quoted-printable"),
        ],
        quoted_printable(text),
    )


def base64_part(content_type: str, encoded: bytes, extra: Headers = ()) -> bytes:
    """A part whose body is already base64 (`base64_lines`)."""
    return part(
        [("Content-Type", content_type), ("Content-Transfer-Encoding", "base64"), *extra],
        encoded,
    )
