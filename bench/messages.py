"""Sample messages for the ceiling: N distinct reminders composed by notifier itself."""

from __future__ import annotations

from dataclasses import replace

from notifier.domain.conference import Conference
from notifier.domain.notice import Kind, Person
from notifier.loading import Conferences, renderer
from notifier.mail.compose import Composed, compose
from notifier.mail.samples import SAMPLE_NOW, sample_notice
from notifier.settings import SHIPPED_CONFERENCES, SHIPPED_TEMPLATES

CONFERENCE = "digitaliseringstraef-2024"


def shipped_conference() -> Conference:
    return Conferences(SHIPPED_CONFERENCES).get(CONFERENCE)


def attendee(i: int, tag: str) -> Person:
    return Person(f"Deltager Nr. {i} Åkjær", f"deltager{i}.{tag}@kommune.example.dk", "Testkommune")


def composed_reminders(n: int, tag: str) -> list[Composed]:
    """n reminders to n different people, exactly as notifier would compose them."""
    conf = shipped_conference()
    render = renderer(SHIPPED_TEMPLATES)
    base = sample_notice(Kind.REMINDER, conf)
    return [
        compose(
            replace(base, key=f"bench:{tag}:{i}", recipient=attendee(i, tag)),
            conf,
            render,
            now=SAMPLE_NOW,
        )
        for i in range(n)
    ]
