"""What the console calls the store's English words: the reasons of bounce reports
(notifier.bounces.reason's closed vocabulary) and the suppression list's reasons, in Danish.

A mail server's own words (a diagnostic) are quoted as they came; only our vocabulary is
translated.
"""

from __future__ import annotations

import re

from notifier.store.suppressions import COMPLAINT, MAILBOX_FULL, ORGANISER

__all__ = ["REASON_NAMES", "danish_reason", "reason_name"]

# Keyed by notifier.bounces.reason.REASONS, every one (a unit test holds them together).
REASON_NAMES: dict[str, str] = {
    "user_unknown": "Ukendt modtager",
    "mailbox_disabled": "Postkassen er lukket",
    "host_unknown": "Ukendt domæne",
    "mailbox_full": "Postkassen er fuld",
    "message_too_big": "Mailen er for stor",
    "policy": "Afvist af modtagerens politik",
    "blocked": "Blokeret (afsenderens IP/domæne)",
    "spam_content": "Afvist som spam eller virus",
    "authentication": "Godkendelse (SPF/DKIM/DMARC)",
    "rate_limited": "For mange mails på kort tid",
    "network": "Kunne ikke nås (netværk, tidsfrist udløbet)",
    "auto_reply": "Autosvar",
    "not_bounce": "Ikke en afvisning",
    "complaint": "Klage (markeret som uønsket)",
    "other": "Anden årsag",
}
HARD_BOUNCE = re.compile(
    r"hard bounce (?P<status>\S+)(?: (?P<reason>[a-z_]+))?(?P<rest>:.*)?", re.S
)
FULL = re.compile(re.escape(MAILBOX_FULL) + r" (?P<count>\d+) times in (?P<days>\d+) days")


def reason_name(reason: str) -> str:
    """A bounce reason's Danish name; "–" for none recorded, the word itself if unknown."""
    if not reason:
        return "–"
    return REASON_NAMES.get(reason, reason)


def danish_reason(reason: str) -> str:
    """The suppression list's reasons (English, for the CLI) as organisers read them (also
    as a suppressed message's reply, "suppressed: <reason>")."""
    reason = reason.removeprefix("suppressed: ")
    if reason == COMPLAINT:
        return "Klage: modtageren har markeret en mail som uønsket"
    if reason.startswith(ORGANISER):
        return "Tilføjet af en arrangør" + reason[len(ORGANISER) :]
    if found := HARD_BOUNCE.fullmatch(reason):
        return _hard_bounce(found)
    if found := FULL.fullmatch(reason):
        days = int(found["days"])
        return (
            f"Postkassen var fuld {found['count']} gange på {days} {'dag' if days == 1 else 'dage'}"
        )
    return reason


def _hard_bounce(found: re.Match[str]) -> str:
    said = f"Permanent afvist (hard bounce) {found['status']}"
    reason = found["reason"]
    if reason in REASON_NAMES:
        said += f", {REASON_NAMES[reason]}"
    elif reason:
        said += f" {reason}"
    return said + (found["rest"] or "")
