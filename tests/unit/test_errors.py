"""The error tree as documented: the drawing in notifier.errors is the class hierarchy, and
the named errors for an unknown registration or batch say what they said as LookupError."""

from __future__ import annotations

import re

import pytest

from notifier import errors
from notifier.errors import NotifierError, UnknownBatch, UnknownRegistration

BRANCH = re.compile(r"[├└]── (?P<name>\w+)")


def drawn_parents(doc: str) -> dict[str, str | None]:
    """Each class in the docstring's tree and the class it is drawn under."""
    lines = doc.split("::", 1)[1].split("\n\n", 2)[1].splitlines()  # the indented drawing
    root = lines[0].split()[0]
    parents: dict[str, str | None] = {root: None}
    stack: list[tuple[int, str]] = [(-1, root)]
    for line in lines[1:]:
        found = BRANCH.search(line)
        if found is None:
            continue  # a description going on from the line above
        while stack[-1][0] >= found.start():
            stack.pop()
        parents[found["name"]] = stack[-1][1]
        stack.append((found.start(), found["name"]))
    return parents


def real_parents() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in errors.__all__:
        cls = getattr(errors, name)
        ours = [b.__name__ for b in cls.__bases__ if issubclass(b, NotifierError)]
        found[name] = ours[0] if ours else None
    return found


def test_the_drawn_tree_is_the_class_hierarchy() -> None:
    assert errors.__doc__ is not None
    assert drawn_parents(errors.__doc__) == real_parents()


def test_the_tree_reader_sees_a_wrong_parent() -> None:
    doc = "x::\n\n    NotifierError  base\n    └── ConfigError\n        └── InvalidEvent  a\n\n"
    assert drawn_parents(doc) == {
        "NotifierError": None,
        "ConfigError": "NotifierError",
        "InvalidEvent": "ConfigError",
    }
    assert drawn_parents(doc) != {k: v for k, v in real_parents().items() if k in doc}


def test_unknown_registration_names_it_as_before() -> None:
    exc = UnknownRegistration("REG-7")
    assert exc.registration == "REG-7"
    assert str(exc) == "registration REG-7 is unknown: no attendee to notify"
    # Not a LookupError: a handler for it must not also take a KeyError from a bug.
    assert not isinstance(exc, LookupError)


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ((), "batch 'nope': not found"),
        (("a:r", "b:r"), "batch 'r': ambiguous, one of a:r, b:r"),
    ],
)
def test_unknown_batch_says_what_status_said(candidates: tuple[str, ...], message: str) -> None:
    exc = UnknownBatch(message.split("'")[1], candidates)
    assert str(exc) == message
    assert exc.candidates == candidates
    assert isinstance(exc, LookupError)  # callers of status() that caught LookupError still do
