"""Return-path tokens: shape, round trip, and every way a forged or damaged one is refused."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.bounces.token import (
    ID_LENGTH,
    TOKEN_LENGTH,
    find_tokens,
    message_id,
    message_token,
    return_path,
    verify,
)

SECRET = b"a secret of the kind NOTIFIER_BOUNCE_SECRET holds"
OTHER_SECRET = b"the secret of another installation"
BOUNCES = "bounces@kl.dk"
KEY = "digitaliseringstraef-2024:REG-1001:confirmation:1"
BASE32 = frozenset(string.ascii_lowercase + "234567")


def test_token_has_a_fixed_length_and_only_lowercase_base32() -> None:
    for key in (KEY, "", "æøå:" * 200):
        token = message_token(key, SECRET)
        assert len(token) == TOKEN_LENGTH == 36
        assert set(token) <= BASE32


def test_token_is_derived_from_key_and_secret() -> None:
    """The same message gets the same return path on every retry; other messages do not."""
    token = message_token(KEY, SECRET)
    assert message_token(KEY, SECRET) == token
    assert message_token(KEY + "x", SECRET)[:ID_LENGTH] != token[:ID_LENGTH]
    other = message_token(KEY, OTHER_SECRET)
    assert other[:ID_LENGTH] == token[:ID_LENGTH] == message_id(KEY)  # the id is public
    assert other[ID_LENGTH:] != token[ID_LENGTH:]  # the tag is not


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        message_token(KEY, b"")
    assert verify(message_token(KEY, SECRET), b"") is None


def test_return_path_puts_the_token_in_the_local_part() -> None:
    token = message_token(KEY, SECRET)
    path = return_path(BOUNCES, token)
    assert path == f"bounces+{token}@kl.dk"
    assert len(path.partition("@")[0]) <= 64  # RFC 5321 section 4.5.3.1.1


@pytest.mark.parametrize("address", ["bounces", "@kl.dk", "bounces@", "x" * 28 + "@kl.dk"])
def test_return_path_refuses_unusable_bounce_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        return_path(address, message_token(KEY, SECRET))


def test_a_genuine_token_verifies_to_its_message_id() -> None:
    assert verify(message_token(KEY, SECRET), SECRET) == message_id(KEY)


def test_an_upper_cased_token_still_verifies() -> None:
    """Some MTAs upper-case the local part of the address they bounce to."""
    assert verify(message_token(KEY, SECRET).upper(), SECRET) == message_id(KEY)


def _flip(char: str) -> str:
    return "a" if char != "a" else "b"


def _forgeries(token: str) -> dict[str, str]:
    return {
        "last tag character changed": token[:-1] + _flip(token[-1]),
        "first tag character changed": token[:ID_LENGTH] + _flip(token[ID_LENGTH]) + token[21:],
        "id of another message, tag kept": message_id("other") + token[ID_LENGTH:],
        "truncated by one": token[:-1],
        "id only": token[:ID_LENGTH],
        "extended by one": token + "a",
        "empty": "",
        "padding": token[:-1] + "=",
        "non-ASCII letter": token[:-1] + "å",
        "Unicode digit": token[:-1] + "٣",
    }


@pytest.mark.parametrize("case", list(_forgeries("x" * TOKEN_LENGTH)))
def test_forged_or_damaged_tokens_are_rejected(case: str) -> None:
    forged = _forgeries(message_token(KEY, SECRET))[case]
    assert verify(forged, SECRET) is None


def test_a_token_made_with_another_secret_is_rejected() -> None:
    assert verify(message_token(KEY, OTHER_SECRET), SECRET) is None


@given(key=st.text(max_size=200), position=st.integers(0, TOKEN_LENGTH - 1), data=st.data())
def test_any_single_character_change_is_rejected(
    key: str, position: int, data: st.DataObject
) -> None:
    token = message_token(key, SECRET)
    assert verify(token, SECRET) == message_id(key)
    replacement = data.draw(st.sampled_from(sorted(BASE32 - {token[position]})))
    assert verify(token[:position] + replacement + token[position + 1 :], SECRET) is None


def test_find_tokens_reads_return_paths_in_header_values() -> None:
    a, b = message_token("a", SECRET), message_token("b", SECRET)
    text = f'"Bounces" <bounces+{a}@kl.dk>, bounces+{b}@KL.DK; <BOUNCES+{a.upper()}@kl.dk>'
    assert find_tokens(text, BOUNCES) == [a, b]  # lower-cased, each once, in order
    assert find_tokens(f"delivered to bounces+{a}@kl.dk.", BOUNCES) == [a]  # a full stop


@pytest.mark.parametrize(
    "text",
    [
        "xbounces+{t}@kl.dk",  # another local part that ends in ours
        "no.bounces+{t}@kl.dk",
        "bounces+{t}@kl.dk.evil.example",  # another domain that starts with ours
        "bounces+{t}@kl.dkx",
        "bounces+{t}@notkl.dk",
        "bounces-{t}@kl.dk",
        "bounces+@kl.dk",
        "bounces@kl.dk",
    ],
)
def test_find_tokens_ignores_other_addresses(text: str) -> None:
    assert find_tokens(text.format(t=message_token(KEY, SECRET)), BOUNCES) == []


def test_find_tokens_returns_forged_candidates_for_verify_to_refuse() -> None:
    """A forged bounce must be seen (and counted) rather than silently look like no token."""
    forged = "a" * TOKEN_LENGTH
    assert find_tokens(f"<bounces+{forged}@kl.dk>", BOUNCES) == [forged]
    assert verify(forged, SECRET) is None
