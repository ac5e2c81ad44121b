"""Why a delivery failed, in a small closed vocabulary, and what each reason may do.

The vocabulary follows the reasons of sisimai (the reference bounce classifier), grouped by
what they mean for us:

- the recipient is gone: `user_unknown` (also "has moved"), `mailbox_disabled` (suspended,
  deactivated, expired), `host_unknown` (no such domain, or a domain that takes no mail);
- the recipient may come back: `mailbox_full`;
- our side has a problem, never the recipient's (an operator signal): `blocked` (a blocklist,
  reputation, missing PTR), `authentication` (SPF, DKIM, DMARC), `policy`, `spam_content`
  (including viruses and malformed content), `message_too_big`, `rate_limited`;
- the path failed: `network` (timeouts, expiry, loops, unreachable hosts);
- not a failure: `auto_reply`, `not_bounce`; `complaint` (an ARF abuse report);
- `other`: a failure nothing here recognises.

`classify` reads the remote server's words first (a rule table of phrases each reason uses)
and only then the enhanced status code (RFC 3463, and the codes RFC 7372, RFC 7505 and
RFC 8689 added): servers often write 5.1.1 or 5.7.1 for whatever went wrong, but rarely
write "user unknown" when a blocklist refused them.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

Reason = Literal[
    "user_unknown",
    "mailbox_disabled",
    "host_unknown",
    "mailbox_full",
    "message_too_big",
    "policy",
    "blocked",
    "spam_content",
    "authentication",
    "rate_limited",
    "network",
    "auto_reply",
    "not_bounce",
    "complaint",
    "other",
]
REASONS: tuple[Reason, ...] = get_args(Reason)
# The recipient is gone: a failure for one of these suppresses the address.
GONE: frozenset[Reason] = frozenset({"user_unknown", "mailbox_disabled", "host_unknown"})
# Our relay, our domain or our content has a problem: a failure never suppresses the
# recipient, and the operator is told (a metric, a log line, the console).
SIGNALS: frozenset[Reason] = frozenset(
    {"blocked", "authentication", "policy", "spam_content", "message_too_big", "rate_limited"}
)

# Phrases per reason, in the order they are tried: the most specific words first, so that
# "550 5.1.1 blocked using zen.spamhaus.org" is a blocklist and not an unknown user.
# Each entry is a regular expression over the text lower-cased with spaces evened out.
RULES: tuple[tuple[Reason, tuple[str, ...]], ...] = (
    (
        "authentication",
        (
            r"\bspf\b.{0,40}\b(fail|check|record|validation|violation|alignment)",
            r"sender policy framework",
            r"\bdmarc\b",
            r"\bdkim\b(?!-signature).{0,40}\b(fail|signature|valid)",
            r"(not|n't) (pass|passed) (either )?(spf|dkim)",
            r"authentication (check|checks)? ?(failed|failure)? ?.{0,20}(spf|dkim|dmarc)",
            r"is not allowed to send (mail )?from .{0,80}spf",
            r"5\.7\.2[0-46-9]\b",
            r"unauthenticated email .{0,40}not accepted",
        ),
    ),
    (
        "blocked",
        (
            r"black ?list",
            r"block ?list",
            r"blocked using",
            r"\b(rbl|dnsbl|spamhaus|spamcop|barracudacentral|sorbs|abuseat)\b",
            r"banned sending ip",
            r"\bip\b.{0,60}\b(blocked|banned|listed|reputation|rejected|not allowed)",
            r"(sender|sending|client|source) ip.{0,40}(rejected|blocked|denied)",
            r"reputation",
            r"\bptr\b",
            r"reverse (dns|lookup)",
            r"rdns",
            r"cannot find your hostname",
            r"dynamic ip",
            r"dynamic/zombied",
            r"not currently accepting mail from your ip",
            r"refused to talk to me",
            r"5\.7\.(25|606|607|608|509|510|511|512|750)\b",
            r"as\(\d+\)",
            r"helo command rejected",
            r"rejecting open proxy",
            r"looks suspiciously like spammer",
            r"temporarily deferred due to (unexpected volume or )?user complaints",
            r"block(ed)? for abuse",
            r"\bgo away\b",
        ),
    ),
    (
        "rate_limited",
        (
            r"rate[- ]limit",
            r"too many (connections|concurrent|smtp sessions|messages|errors|recipients)",
            r"connection (rate )?limit",
            r"try again slower",
            r"at a rate that prevents",
            r"throttl",
            r"max(imum)? (emails|messages|sending rate)",
            r"\b(daily|hourly) (message |sending )?(quota|limit)",
            r"greylist",
            r"4\.7\.28\b",
        ),
    ),
    (
        "spam_content",
        (
            r"\bspam\b",
            r"unsolicited",
            r"\bvirus",
            r"malware",
            r"phishing",
            r"(message|mail) content (rejected|denied)",
            r"content filter",
            r"bulk (e-?mail|mail)",
            r"unacceptable content",
            r"banned content",
            r"suspicious",
            r"executable",
            r"uribl",
            r"not rfc ?5322 compliant",
            r"rfcmessagenoncompliant",
            r"(invalid|duplicate) (mime )?header",
            r"improper use of 8-bit",
            r"mime complexity",
            r"5\.7\.28\b",
        ),
    ),
    (
        "mailbox_full",
        (
            r"quota",
            r"mailbox (is )?full",
            r"full mailbox",
            r"mail ?(box|folder) (is )?(full|over)",
            r"(is|user) over (the )?(disk )?quota",
            r"insufficient (disk )?(space|storage)",
            r"(not|does not have) enough (disk |storage )?space",
            r"disk space limit",
            r"no space left",
            r"exceeded storage allocation",
            r"storage space",
            r"space has been used up",
            r"mailbox size limit exceeded",
            r"too many messages on the server",
            r"boite du destinataire pleine",
            r"too much mail data",
            r"[45]\.2\.2\b",
        ),
    ),
    (
        "message_too_big",
        (
            r"message (size|length|file)? ?(too (big|large)|exceeds)",
            r"(size|length) (limit|exceeds)",
            r"maximum (inbound )?message size",
            r"message too (big|large)",
            r"max message size",
            r"line limit exceeded",
            r"header size exceeds",
            r"taille limite",
            r"[45]\.(3\.4|2\.3)\b",
        ),
    ),
    (
        # Our sender address, not the recipient's: "Sender address rejected", "Domain of
        # sender address ... does not exist" (often written with a recipient's 5.1.x code).
        "policy",
        (
            r"sender address (rejected|refused|denied|invalid|unknown|does not)",
            r"(domain of )?sender (domain|address) .{0,80}(does not exist|must exist|not found)",
            r"domain of sender address",
            r"\[mail_from\]",
            r"in reply to mail from",
            r"sender verif(y|ication) failed",
            r"(sender|mail from) .{0,40}(not allowed|blacklisted|rejected)",
            r"(?<!recipient address rejected: )access denied",
            r"relay(ing)? (access )?(denied|not permitted|prohibited)",
            r"unable to relay",
            r"(no|not an open) relay",
        ),
    ),
    (
        "mailbox_disabled",
        (
            r"suspend",
            r"disabled",
            r"deactivated",
            r"inactiv",
            r"(account|mailbox|address) (has )?expired",
            r"(account|mailbox) (is )?(locked|frozen|closed|blocked)",
            r"no longer (accepts|accepting|active|available|in use|valid)",
            r"archived recipient",
            r"boite du destinataire archivee",
            r"user is terminated",
            r"discontinued",
            r"temporar(y|ily) locked",
            r"account (is )?not active",
            r"[45]\.2\.1\b.{0,40}(disabled|not accepting)",
        ),
    ),
    (
        # A name server that did not answer is no verdict on the domain.
        "network",
        (r"not found, try again", r"temporary (dns|name) (failure|error)"),
    ),
    (
        "host_unknown",
        (
            r"bad destination system address",
            r"host (or domain name )?(not found|unknown)",
            r"unknown (host|domain)",
            r"domain (does not exist|not found|must exist|is not reachable|name not found)",
            r"no such domain",
            r"unrou?teable (mail )?(address|domain)",
            r"name or service not known",
            r"(domain|host) does not accept mail",
            r"does not accept mail \(nullmx\)",
            r"null ?mx",
            r"no mx record",
            r"mail domain .{0,40}unknown",
            r"account or domain may not exist",
            r"dns records for the destination .{0,20}could not be found",
            r"[45]\.1\.(2|10)\b",
            r"5\.4\.4\b",
            r"5\.7\.27\b",
        ),
    ),
    (
        "user_unknown",
        (
            r"(user|recipient|mailbox|address|account|addressee|person)\b.{0,20}"
            r"(unknown|not found|not exist|doesn'?t exist|does not exist|invalid|not valid"
            r"|not known|is not a known user|missing)",
            r"mailbox (is )?unavailable",
            r"bad destination mailbox address",
            r"recipient address rejected(\.|$| \(| \[)",
            r"recipient address rejected: access denied",
            r"(doesn't|does not) have an? .{0,40}account",
            r"(unknown|invalid|bad|no such|non-?existent|illegal) "
            r"(user|recipient|mailbox|address|account|local ?part|e-?mail|person|rcpt)",
            r"no (mailbox|account|one|user) (here )?(by that name|at this address|found)",
            r"not a valid (mailbox|user|recipient)",
            r"not (a )?(local|known) (address|user|recipient)",
            r"not an active address",
            r"is not a known user",
            r"no such (user|mailbox|recipient|address|person)",
            r"no (mailbox|account)",
            r"resolver\.adr\.recipient ?notfound",
            r"(does not|doesn't|didn't|did not) exist",
            r"has been replaced by",
            r"has moved",
            r"(isn't|is not) in my (list of allowed rcpthosts|validrcptto)",
            r"badrcptto|badrecipientto",
            r"utilisateur inconnu",
            r"not listed in .{0,30}(directory|address book)",
            r"invalid .{0,20}userid",
            r"ディレクトリ.{0,8}(ありません|見つかりません)",
            r"(宛先|アドレス|ユーザ).{0,12}(存在しません|見つかりません)",
            r"nessun utente",
            r"no existe",
            r"(couldn't|could not|can't|cannot) be found",
            r"rejected: account unavailable",
            r"[45]\.1\.[136]\b",
            r"5\.1\.0 address rejected",
            r"5\.7\.1[78]\b",
        ),
    ),
    (
        "network",
        (
            r"timed? ?out",
            r"expired",
            r"giving up",
            r"(could not|unable to) (be )?deliver.{0,40}(for|after) (more than|multiple|\d)",
            r"(in|sitting in) (the )?queue (too long|for)",
            r"(mail|forwarding|routing) loop",
            r"too many hops",
            r"no route to host",
            r"host is unreachable",
            r"connection (refused|reset|dropped|was dropped)",
            r"lookup fail",
            r"name server",
            r"not reachable",
            r"failing for a long time",
        ),
    ),
)
# Generic words of a refusal: weaker evidence than a specific status code.
WEAK: tuple[tuple[Reason, tuple[str, ...]], ...] = (
    (
        "policy",
        (
            r"polic(y|ies)",
            r"relay",
            r"not (allowed|authori[sz]ed|permitted)",
            r"administrative prohibition",
            r"access denied",
            r"prohibited",
            r"(sender|from) .{0,30}(rejected|refused|denied|invalid|not verified|blacklisted)",
            r"sender verify failed",
            r"refused",
            r"rejected",
            r"\bbatv\b",
            r"members-only",
            r"not subscribed",
            r"restricted",
            r"only accepting mail from",
            r"recipient preferences",
            r"blocked",
            r"requires? (authentication|starttls|tls)",
            r"authentication required",
            r"resolver\.rst\.",
            r"organi[sz]ation",
        ),
    ),
)


def _compiled(
    rules: tuple[tuple[Reason, tuple[str, ...]], ...],
) -> tuple[tuple[Reason, re.Pattern[str]], ...]:
    return tuple((reason, re.compile("|".join(f"(?:{p})" for p in ps))) for reason, ps in rules)


_STRONG = _compiled(RULES)
_WEAK = _compiled(WEAK)
# A recipient the server accepted at RCPT and refused only after the message (the reply to
# DATA): "user unknown" then is a filter's word, not a verdict on the mailbox (sisimai's
# "filtered").
# Reasons a notice's words may put in place of a verdict that the recipient is gone.
OVERRIDING = frozenset({"mailbox_full", "blocked", "authentication", "spam_content"})
QUOTED_HEADER = re.compile(r"^(>|\s*[a-z][\w-]*: )", re.IGNORECASE)
AFTER_DATA = re.compile(r"(in reply to|after) (end of )?data\b")

# Enhanced status codes (RFC 3463 and the registry's later additions): exact codes first,
# then the subject (the middle number) for the rest.
CODES: dict[str, Reason] = {
    "1.0": "user_unknown",
    "1.1": "user_unknown",
    "1.2": "host_unknown",
    "1.3": "user_unknown",
    "1.6": "user_unknown",
    "1.10": "host_unknown",
    "2.1": "mailbox_disabled",
    "2.2": "mailbox_full",
    "2.3": "message_too_big",
    "3.1": "network",
    "3.4": "message_too_big",
    "4.1": "network",
    "4.2": "network",
    "4.4": "host_unknown",
    "4.6": "network",
    "4.7": "network",
    "5.3": "rate_limited",
    "7.1": "policy",
    "7.13": "mailbox_disabled",
    "7.17": "user_unknown",
    "7.18": "host_unknown",
    "7.20": "authentication",
    "7.21": "authentication",
    "7.22": "authentication",
    "7.23": "authentication",
    "7.24": "authentication",
    "7.25": "blocked",
    "7.26": "authentication",
    "7.27": "host_unknown",
    "7.28": "spam_content",
    "7.29": "authentication",
}
SUBJECTS: dict[str, Reason] = {
    "1": "other",
    "2": "other",
    "3": "network",
    "4": "network",
    "5": "policy",
    "6": "spam_content",
    "7": "policy",
}
SPACES = re.compile(r"\s+")
# The reply code and status that start each continued line of a multi-line reply
# ("550-5.2.1 "), which would otherwise split the words the rules look for.
CONTINUATION = re.compile(r"(?<=\s)\d{3}[- ](?:[245]\.\d{1,3}\.\d{1,3}\s)?(?=\D)")
# Codes about our sender, never the recipient: the text cannot make them the recipient's.
SENDER_CODES = ("1.7", "1.8")


def classify(status: str, text: str) -> Reason:
    """The reason a failure with enhanced status `status` ("5.1.1"; "" when none) and the
    remote server's words `text` stands for. "other" when neither says."""
    if status.partition(".")[2] in SENDER_CODES:
        return "policy"
    said = CONTINUATION.sub("", SPACES.sub(" ", text.lower()))
    reason = _first(_STRONG, said) or _specific(status) or _first(_WEAK, said) or "other"
    if reason == "user_unknown" and AFTER_DATA.search(said):
        return "policy"
    return reason


def conservative(reason: Reason, notice: str) -> Reason:
    """`reason` unless it would suppress and the notice's own words (the human-readable part
    around the report) say otherwise: a full mailbox, a blocklist, a refusal after DATA.
    When two sources disagree on whether a recipient is gone, it is not."""
    if reason not in GONE:
        return reason
    # Not the headers a notice quotes from the returned message (DKIM-Signature: ...).
    own = "\n".join(line for line in notice.splitlines() if not QUOTED_HEADER.match(line))
    said = CONTINUATION.sub("", SPACES.sub(" ", own.lower()))
    if reason == "user_unknown" and AFTER_DATA.search(said):
        return "policy"
    for found, pattern in _STRONG:
        if found in OVERRIDING and pattern.search(said):
            return found
    return reason


def _first(rules: tuple[tuple[Reason, re.Pattern[str]], ...], said: str) -> Reason | None:
    for reason, pattern in rules:
        if pattern.search(said):
            return reason
    return None


def _specific(status: str) -> Reason | None:
    found = by_code(status)
    return None if found == "other" else found


def by_code(status: str) -> Reason:
    """The reason an enhanced status code alone names; "other" for x.0.0 and unknown codes."""
    _, _, detail = status.partition(".")
    if detail in CODES:
        return CODES[detail]
    subject = detail.partition(".")[0]
    return SUBJECTS.get(subject, "other") if detail not in ("", "0.0") else "other"
