"""A kind of mail rendered once per shape, then filled in with each recipient's values.

Every mail of a reminder batch says the same thing; only the people, the registration
number and a time differ. Rendering the three templates of a mail with Jinja2 was a large
share of composing it, so each shape (kind, conference, which optional values are set)
is rendered once with markers in place of the personal values, and a mail then only fills
its values in (escaped for HTML, as Jinja2's autoescape would).

That is right only while the templates print each value as it is. A template that changes
one (`name.split()[0]`, `|upper`, `|safe`, a test of its length) would make the shortcut
wrong, so a skeleton is used only after it reproduced the full render exactly for the first
mail's values and for two probes unlike them; otherwise that shape is rendered in full for
every mail. A mail
whose values the subject's or the text's whitespace clean-up would change is rendered in full
too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import escape

log = logging.getLogger(__name__)

OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters: no template text contains them
_MARKER = re.compile(f"{OPEN}(\\d+){CLOSE}")

Values = Sequence[str | None]


def marker(slot: int) -> str:
    return f"{OPEN}{slot}{CLOSE}"


def markers(values: Values) -> list[str | None]:
    """The values a skeleton is rendered with: a marker where a value is set, else the value
    itself (None or ""), so that the template takes the same branches."""
    return [marker(i) if v else v for i, v in enumerate(values)]


def shape(values: Values) -> tuple[object, ...]:
    return tuple(True if v else v for v in values)


def _plain(value: str | None) -> bool:
    """Untouched by the text's clean-up (lines stripped at the end, blank runs squeezed)."""
    return not value or (
        value == value.strip()
        and len(value.splitlines()) == 1
        and OPEN not in value
        and CLOSE not in value
    )


def _one_spaced(value: str | None) -> bool:
    """Untouched by the subject's clean-up (every whitespace run becomes one space)."""
    return not value or " ".join(value.split()) == value


@dataclass(frozen=True, slots=True)
class Holes:
    """One rendered text split at its markers: literal, slot, literal, ..., literal."""

    literals: tuple[str, ...]
    slots: tuple[int, ...]

    @classmethod
    def of(cls, text: str) -> Holes | None:
        """None if a marker came out changed (the template transformed the value)."""
        parts = _MARKER.split(text)
        literals = tuple(parts[0::2])
        if any(OPEN in lit or CLOSE in lit for lit in literals):
            return None
        return cls(literals, tuple(int(s) for s in parts[1::2]))

    def fill(self, values: Sequence[str]) -> str:
        if not self.slots:
            return self.literals[0]
        out = [self.literals[0]]
        for slot, literal in zip(self.slots, self.literals[1:], strict=True):
            out.append(values[slot])
            out.append(literal)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Skeleton:
    subject: Holes
    text: Holes
    html: Holes

    @classmethod
    def of(cls, subject: str, text: str, html: str) -> Skeleton | None:
        parts = (Holes.of(subject), Holes.of(text), Holes.of(html))
        if parts[0] is None or parts[1] is None or parts[2] is None:
            return None
        return cls(parts[0], parts[1], parts[2])

    def accepts(self, values: Values) -> bool:
        """Whether filling these values in gives exactly what a full render gives."""
        return all(_plain(v) for v in values) and all(
            _one_spaced(values[s]) for s in self.subject.slots
        )

    def fill(self, values: Values) -> tuple[str, str, str]:
        plain = [v or "" for v in values]
        html = [str(escape(v)) if v else "" for v in values]
        return self.subject.fill(plain), self.text.fill(plain), self.html.fill(html)


Render = Callable[[Values], tuple[str, str, str]]


PROBES = ("Æø{} <b>&'\" x-y", "B{}")


def probes(values: Values) -> list[list[str | None]]:
    """Values unlike the real ones in every way a template might test: spaces, HTML
    specials, non-ASCII letters, other lengths."""
    return [[p.format(i) if v else v for i, v in enumerate(values)] for p in PROBES]


def build(render: Render, values: Values, name: str) -> Skeleton | None:
    """A skeleton for the shape of `values`, or None when it does not reproduce `render`."""
    skeleton = Skeleton.of(*render(markers(values)))
    if skeleton is None:
        log.warning("%s: a template changes a personal value; rendering every mail in full", name)
        return None
    for sample in (values, *probes(values)):
        if skeleton.accepts(sample) and skeleton.fill(sample) != render(sample):
            log.warning("%s: the rendered skeleton differs; rendering every mail in full", name)
            return None
    return skeleton
