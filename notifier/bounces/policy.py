"""What a report does to the message it names: the policy, free of the store.

- A report about another recipient than the message's changes nothing (`mismatched`): an
  attendee's mailbox may forward to a dead one, whose DSN names that other address. The
  report's Final-Recipient and Original-Recipient (each that it states) must both be the
  message's recipient, compared after `recipients.normalise` (case, and the domain's
  IDNA form; the local part is not case-folded: "straße" is not "strasse").
- A failure (`Action: failed`) marks the message `bounced` with its reason. It suppresses the
  address only when the recipient is gone (reason.GONE) and the status is permanent (5.x.x).
  A full mailbox counts towards a suppression that only repeated reports over days make (the
  intake keeps the count). Reasons that are our side's problem (reason.SIGNALS) never
  suppress and raise an operator signal.
- A delay is recorded on the message, and nothing else.
- A complaint suppresses (unless it names another recipient); an ARF `auth-failure` report
  is an authentication signal and changes no message.
- Auto-replies and mail that is no bounce change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from notifier.bounces.reason import GONE, SIGNALS, Reason
from notifier.bounces.report import Recipient, Report
from notifier.domain.recipients import normalise

__all__ = ["Effect", "decide", "normalise", "same_recipient"]


@dataclass(frozen=True)
class Effect:
    """outcome: what the intake counts ("bounced", "delayed", "complaint", "auth_failure",
    "auto_reply", "mismatched", "ignored", "unrecognised"); reason: why; the rest, what to
    do beyond the count."""

    outcome: str
    reason: Reason
    status: str = ""
    diagnostic: str = ""
    suppress: bool = False
    mailbox_full: bool = False  # a permanent full-mailbox failure: counts towards suppression
    signal: bool = False  # our side's problem: tell the operator


def same_recipient(stated: str, recipient: str) -> bool:
    """Whether an address a report states is the message's recipient (a quoted local part
    is the same as its unquoted spelling)."""
    return normalise(_unquoted(stated)) == normalise(_unquoted(recipient))


def _unquoted(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if at and len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return f"{local[1:-1]}@{domain}"
    return address


def _matches(found: Recipient, recipient: str) -> bool:
    stated = [a for a in (found.final_recipient, found.original_recipient) if a]
    return all(same_recipient(a, recipient) for a in stated)


def decide(report: Report, recipient: str) -> Effect:
    """What `report` does to a message sent to `recipient`."""
    if report.kind == "unrecognised":
        return Effect("unrecognised", "not_bounce")
    if report.kind == "auto_reply":
        return Effect("auto_reply", "auto_reply")
    if report.kind == "auth_failure":
        return Effect("auth_failure", "authentication", signal=True)
    if report.kind == "complaint":
        if report.complained and not any(same_recipient(a, recipient) for a in report.complained):
            return Effect("mismatched", "complaint")
        return Effect("complaint", "complaint", suppress=True)
    ours = [r for r in report.recipients if _matches(r, recipient)]
    if report.recipients and not ours:
        return Effect("mismatched", report.reason)
    return _dsn(ours)


def _dsn(ours: list[Recipient]) -> Effect:
    failed = [r for r in ours if r.action == "failed"]
    delayed = [r for r in ours if r.action == "delayed"]
    if failed:
        first = failed[0]
        permanent = first.status.startswith("5")
        return Effect(
            "bounced",
            first.reason,
            first.status,
            first.diagnostic,
            suppress=permanent and first.reason in GONE,
            mailbox_full=permanent and first.reason == "mailbox_full",
            signal=first.reason in SIGNALS,
        )
    if delayed:
        first = delayed[0]
        return Effect("delayed", first.reason, first.status, first.diagnostic)
    return Effect("ignored", "not_bounce")
