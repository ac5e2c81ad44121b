"""The bounce policy: which report suppresses, which only bounces, which changes nothing."""

from __future__ import annotations

import pytest

from notifier.bounces.policy import decide, same_recipient
from notifier.bounces.report import Recipient, Report
from notifier.domain.recipients import normalise


def test_the_local_part_is_not_folded_beyond_ascii_case() -> None:
    assert normalise("straße@kl.dk") != normalise("strasse@kl.dk")
    assert normalise("METTE@KL.DK") == normalise("mette@kl.dk")
    assert same_recipient("Mette@Ærø.DK", "mette@xn--r-3fa9c.dk")
    assert same_recipient('"mette"@kl.dk', "mette@kl.dk")
    assert not same_recipient("straße@kl.dk", "strasse@kl.dk")


def dsn(*recipients: Recipient) -> Report:
    return Report("dsn", ("t",), "f", recipients, "rfc3464")


def failed(status: str, reason: str, final: str = "a@kl.dk", original: str = "") -> Recipient:
    return Recipient("failed", status, "said", final, reason, original)  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", ["user_unknown", "mailbox_disabled", "host_unknown"])
def test_a_permanent_failure_for_a_recipient_who_is_gone_suppresses(reason: str) -> None:
    effect = decide(dsn(failed("5.1.1", reason)), "A@KL.dk")
    assert (effect.outcome, effect.reason, effect.suppress) == ("bounced", reason, True)


@pytest.mark.parametrize(
    "reason", ["blocked", "authentication", "policy", "spam_content", "rate_limited"]
)
def test_our_sides_problems_bounce_signal_and_never_suppress(reason: str) -> None:
    effect = decide(dsn(failed("5.7.1", reason)), "a@kl.dk")
    assert (effect.outcome, effect.suppress, effect.signal) == ("bounced", False, True)


def test_a_full_mailbox_only_counts_towards_suppression() -> None:
    effect = decide(dsn(failed("5.2.2", "mailbox_full")), "a@kl.dk")
    assert (effect.suppress, effect.mailbox_full, effect.signal) == (False, True, False)


def test_a_failure_on_a_temporary_status_never_suppresses() -> None:
    effect = decide(dsn(failed("4.4.1", "user_unknown")), "a@kl.dk")
    assert (effect.outcome, effect.suppress, effect.mailbox_full) == ("bounced", False, False)


def test_a_report_for_another_recipient_is_mismatched() -> None:
    assert decide(dsn(failed("5.1.1", "user_unknown", "dead@else.dk")), "a@kl.dk").outcome == (
        "mismatched"
    )
    # Forwarded: the original recipient is ours, the final one is not.
    forwarded = failed("5.1.1", "user_unknown", "dead@else.dk", "a@kl.dk")
    assert decide(dsn(forwarded), "a@kl.dk").outcome == "mismatched"


def test_a_complaint_suppresses_unless_it_names_someone_else() -> None:
    complaint = Report("complaint", ("t",), "f", (), "arf", "abuse", ("a@kl.dk",))
    assert decide(complaint, "A@kl.dk").suppress
    other = Report("complaint", ("t",), "f", (), "arf", "abuse", ("b@kl.dk",))
    assert decide(other, "a@kl.dk").outcome == "mismatched"


def test_auth_failure_auto_replies_and_non_bounces_change_nothing() -> None:
    auth = decide(Report("auth_failure", ("t",), "f", (), "arf", "auth-failure"), "a@kl.dk")
    assert (auth.outcome, auth.reason, auth.suppress, auth.signal) == (
        "auth_failure",
        "authentication",
        False,
        True,
    )
    assert decide(Report("auto_reply", (), "f"), "a@kl.dk").outcome == "auto_reply"
    assert decide(Report("unrecognised", (), "f"), "a@kl.dk").outcome == "unrecognised"
