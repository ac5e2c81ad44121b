"""Skeletons: a shape rendered once and filled in gives exactly the full render, or is not used."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.domain.conference import Conference
from notifier.domain.notice import Kind, Notice, Person
from notifier.loading import template_loader
from notifier.mail.render import Rendered, Renderer, conference_facts, notice_context
from notifier.mail.samples import sample_notice
from notifier.mail.skeleton import Holes, Skeleton, marker


def full(renderer: Renderer, notice: Notice, conf: Conference) -> Rendered:
    return renderer.render(
        notice.kind.value, notice_context(notice, conference_facts(conf), conf.tz)
    )


def fast(renderer: Renderer, notice: Notice, conf: Conference) -> Rendered:
    return renderer.render_notice(notice, conference_facts(conf), conf.tz)


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_renders_as_in_full(conference: Conference, kind: Kind) -> None:
    renderer = Renderer(template_loader(Path("templates")))
    notice = sample_notice(kind, conference)
    first = fast(renderer, notice, conference)
    other = replace(notice, recipient=Person("Åse Ørsted-Æbelø", "aase@kommune.dk", "Aarhus"))
    assert first == full(renderer, notice, conference)
    assert fast(renderer, other, conference) == full(renderer, other, conference)
    assert renderer._skeletons and None not in renderer._skeletons.values()


def test_a_timed_conference_has_its_own_skeleton(
    conference: Conference, timed_conference: Conference
) -> None:
    renderer = Renderer(template_loader(Path("templates")))
    for conf in (conference, timed_conference, conference):
        notice = sample_notice(Kind.CONFIRMATION, conf)
        assert fast(renderer, notice, conf) == full(renderer, notice, conf)
    assert len(renderer._skeletons) == 2


def test_a_seat_that_came_back_has_its_own_skeleton(conference: Conference) -> None:
    renderer = Renderer(template_loader(Path("templates")))
    colleague = sample_notice(Kind.SUBSTITUTION_IN, conference)
    came_back = replace(colleague, from_colleague=False)
    outs = [fast(renderer, n, conference) for n in (colleague, came_back, colleague)]
    assert outs == [full(renderer, n, conference) for n in (colleague, came_back, colleague)]
    assert "Dataansvarlig" in outs[0].text and "Dataansvarlig" not in outs[1].text
    assert len(renderer._skeletons) == 2 and None not in renderer._skeletons.values()


NAMES = st.text(
    st.characters(blacklist_categories=["Cs", "Cc", "Cf", "Zl", "Zp"]) | st.sampled_from(" <>&'\""),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(name=NAMES, organisation=st.none() | st.just("") | NAMES)
def test_any_name_renders_as_in_full(
    conference: Conference, renderer: Renderer, name: str, organisation: str | None
) -> None:
    for kind in (Kind.REMINDER, Kind.SUBSTITUTION_COPY):
        notice = sample_notice(kind, conference)
        notice = replace(notice, recipient=Person(name, "x@kommune.dk", organisation))
        if notice.previous is not None:
            notice = replace(notice, previous=Person(name, "p@kommune.dk", organisation))
        assert fast(renderer, notice, conference) == full(renderer, notice, conference)


def kind_folder(tmp_path: Path, line: str) -> Path:
    (tmp_path / "reminder").mkdir()
    (tmp_path / "reminder" / "subject.txt").write_text("Påmindelse")
    (tmp_path / "reminder" / "body.txt").write_text(f"Kære {line}\n")
    (tmp_path / "reminder" / "body.html").write_text(f"<p>Kære {line}</p>")
    (tmp_path / "_invite.txt").write_text("{{ c.title }}")
    return tmp_path


@pytest.mark.parametrize(
    "line",
    [
        "{{ recipient.name.split()[0] }}",
        "{{ recipient.name | upper }}",
        "{{ recipient.name | safe }}",
        "{{ recipient.name[:3] }}",
        "{% if recipient.name | length > 12 %}lange{% else %}{{ recipient.name }}{% endif %}",
        "{{ recipient.name ~ recipient.name }}{{ registration_id | replace('-', '') }}",
    ],
)
def test_a_template_that_changes_a_value_is_rendered_in_full(
    tmp_path: Path, conference: Conference, line: str
) -> None:
    renderer = Renderer(template_loader(kind_folder(tmp_path, line)))
    notice = sample_notice(Kind.REMINDER, conference)
    others = [
        replace(notice, recipient=Person(n, "x@kommune.dk"), registration_id=f"R-{i}")
        for i, n in enumerate(["Jens Hansen", "Bo", "Anne-Mette Kjærsgaard <x>"])
    ]
    for other in [notice, *others]:
        assert fast(renderer, other, conference) == full(renderer, other, conference)
    assert set(renderer._skeletons.values()) == {None}  # no skeleton was used


def test_holes_split_at_markers_and_refuse_changed_ones() -> None:
    holes = Holes.of(f"a{marker(0)}b{marker(2)}{marker(0)}")
    assert holes is not None
    assert holes.fill(["X", "-", "Z"]) == "aXbZX"
    assert Holes.of(marker(1).upper() + "\ue000") is None
    assert Holes.of(marker(1)[:-1]) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["Jens Hansen", None, ""], True),
        (["Jens Hansen", "Jens  Hansen", ""], True),  # two spaces, but not in the subject
        (["Jens  Hansen", None, ""], False),
        (["Jens\u00a0Hansen", None, ""], False),
        ([" Jens", None, ""], False),
        (["Jens", "Hansen\u00a0", ""], False),
        (["Jens", "Han\x1csen", ""], False),
        (["a\ue000b", None, ""], False),
    ],
)
def test_values_that_whitespace_clean_up_would_change_are_not_filled_in(
    values: list[str | None], expected: bool
) -> None:
    skeleton = Skeleton.of(f"Til {marker(0)}", f"{marker(0)} {marker(1)}", marker(2))
    assert skeleton is not None
    assert skeleton.accepts(values) is expected
