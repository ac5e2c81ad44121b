"""MIME pieces: the line-by-line quoted-printable is the stdlib's, byte for byte."""

from __future__ import annotations

import binascii

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.mime import quoted_printable

TEXT = st.text(
    st.characters(blacklist_categories=["Cs"]) | st.sampled_from(" \t\n\r.=æø€"), max_size=300
)


def whole(text: str) -> bytes:
    """The stdlib's encoding of the whole text at once, with CRLF line ends."""
    data = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@settings(max_examples=500, deadline=None)
@given(TEXT)
def test_line_by_line_is_the_whole_text_encoded(text: str) -> None:
    assert quoted_printable(text) == whole(text)


def test_long_lines_get_soft_breaks_and_trailing_blanks_are_kept() -> None:
    text = "Kære " + "æ" * 60 + " \nslut\t\n"
    encoded = quoted_printable(text)
    assert encoded == whole(text)
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert b"=20\r\n" in encoded and encoded.endswith(b"slut=09\r\n")
