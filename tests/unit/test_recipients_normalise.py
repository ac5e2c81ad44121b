"""normalise: the one key under which every spelling of a mailbox is suppressed."""

from __future__ import annotations

import pytest

from notifier.domain.recipients import check_address, normalise
from notifier.mail.compose import envelope_address

# Ærø's A-label, computed by the idna package (UTS 46): "xn--r-3fa9c". (The A-label
# "xn--r-xfa4b" is "ãrð", another domain, and must stay another key.)
AERO = "mette@xn--r-3fa9c.dk"


@pytest.mark.parametrize(
    "spelling",
    [
        "Mette@Ærø.DK",
        "mette@ærø.dk",
        "METTE@XN--R-3FA9C.DK",
        AERO,
        " mette@ærø.dk ",  # as a header might carry it
        "mette@ærø.dk.",  # the root's dot
    ],
)
def test_every_spelling_of_one_mailbox_is_one_key(spelling: str) -> None:
    assert normalise(spelling) == AERO


def test_another_domain_stays_another_key() -> None:
    assert normalise("mette@xn--r-xfa4b.dk") != AERO
    assert normalise("mette@aero.dk") != AERO


def test_sharp_s_in_a_domain_is_kept_as_idna_2008_does() -> None:
    # Case folding first would turn straße.de into strasse.de: another domain.
    assert normalise("Hans@Straße.DE") == "hans@xn--strae-oqa.de"
    assert normalise("hans@strasse.de") == "hans@strasse.de"


def test_the_local_part_is_case_folded_and_nfc_normalised() -> None:
    decomposed = "Se\u0301ren@kl.dk"  # e + combining acute
    assert normalise(decomposed) == "s\u00e9ren@kl.dk"
    assert normalise("S\u00c9REN@KL.DK") == "s\u00e9ren@kl.dk"


def test_the_address_a_validated_event_stores_and_the_envelope_share_a_key() -> None:
    stored = check_address("Mette.Sorensen@Ærø.dk")
    assert (
        normalise(stored) == normalise(envelope_address(stored)) == "mette.sorensen@xn--r-3fa9c.dk"
    )


def test_what_idna_refuses_is_only_case_folded_and_stays_stable() -> None:
    assert normalise("Mette@Ærø..DK") == "mette@ærø..dk"
    assert normalise(normalise("Mette@Ærø..DK")) == normalise("Mette@Ærø..DK")
    assert normalise("Postmaster") == "postmaster"


@pytest.mark.parametrize("address", ["Mette@Ærø.DK", "hans@straße.de", "x@KL.DK", "a@b..c"])
def test_normalise_is_idempotent(address: str) -> None:
    assert normalise(normalise(address)) == normalise(address)
