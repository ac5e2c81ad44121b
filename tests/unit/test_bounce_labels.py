"""The console's Danish words for the bounce vocabulary and the suppression list's reasons."""

from __future__ import annotations

from notifier.bounces.reason import REASONS
from notifier.console.labels import REASON_NAMES, danish_reason, reason_name


def test_every_reason_has_a_danish_name_and_no_other_word_does() -> None:
    assert set(REASON_NAMES) == set(REASONS)
    assert len(set(REASON_NAMES.values())) == len(REASONS)  # no two read the same
    assert reason_name("mailbox_full") == "Postkassen er fuld"
    assert reason_name("") == "–"
    assert reason_name("something_new") == "something_new"


def test_suppression_reasons_in_danish() -> None:
    assert (
        danish_reason("mailbox full 3 times in 5 days") == "Postkassen var fuld 3 gange på 5 dage"
    )
    assert danish_reason("mailbox full 3 times in 1 days") == "Postkassen var fuld 3 gange på 1 dag"
    said = ": 550 5.1.1 <m***@aarhus.dk>: unknown"
    assert (
        danish_reason(f"hard bounce 5.1.1 user_unknown{said}")
        == f"Permanent afvist (hard bounce) 5.1.1, Ukendt modtager{said}"
    )
    # Recorded before reasons were: as it was.
    assert danish_reason("hard bounce 5.1.1: gone") == "Permanent afvist (hard bounce) 5.1.1: gone"
    assert danish_reason("hard bounce 5.1.1") == "Permanent afvist (hard bounce) 5.1.1"
    assert danish_reason("suppressed: complaint").startswith("Klage")
    assert danish_reason("added by an organiser: ønskede det").startswith("Tilføjet af en arrangør")
    assert danish_reason("anything else") == "anything else"
