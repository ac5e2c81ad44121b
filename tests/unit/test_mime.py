"""MIME pieces: the line-by-line quoted-printable is the stdlib's, byte for byte."""

from __future__ import annotations

import binascii
from email import message_from_string, policy
from email.header import decode_header

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.mail.mime import encoded_words, mailbox, quoted_printable

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


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=120))
def test_encoded_words_read_back_as_the_name(name: str) -> None:
    words = encoded_words(name)
    lines = words.split("\r\n ")
    assert all(len(w) <= 75 and w.startswith("=?utf-8?b?") for w in lines)
    decoded = b"".join(
        part if isinstance(part, bytes) else part.encode() for part, _ in decode_header(words)
    )
    assert decoded.decode("utf-8") == name
    header = f"To: {mailbox(name + 'æ', 'x@kommune.dk')}\r\n\r\n"
    [address] = message_from_string(header, policy=policy.default)["To"].addresses
    assert address.addr_spec == "x@kommune.dk"
    # CPython's newer parser puts a space between adjacent encoded words, which RFC 2047
    # 6.2 says to ignore (mail clients do); the older decode_header above follows the RFC.
    assert "".join(address.display_name.split()) == "".join((name + "æ").split())
