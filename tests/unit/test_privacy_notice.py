"""The privacy notice (GDPR art. 14) to a colleague whose data came from someone else.

It names the controller, the source, the categories of data and the rights (the system and
the law know those), and states the rest (contact, data-protection officer, purposes, legal
basis, recipients, retention) only as the conference file gives it: an item the file leaves
out points to the privacy policy instead of being made up. The text and the HTML part say the
same items.
"""

from __future__ import annotations

import re
from dataclasses import replace
from html import unescape

import pytest

from notifier.domain.conference import Conference, Privacy, parse_conference
from notifier.domain.notice import Kind, Person
from notifier.errors import ConfigError
from notifier.mail.render import Rendered, Renderer, conference_facts
from notifier.mail.samples import JENS, sample_notice

SEE_POLICY = "se privatlivspolitikken."
# Facts nobody announced, which the notice once stated: invoicing as a purpose, the
# bookkeeping law's retention, notifier's own purge period as KL's, KL's address and CVR.
INVENTED = ("faktur", "bogføring", "regnskab", "30 dage", "CVR", "Weidekampsgade")
FULL = Privacy(
    controller_contact="privacy@kl.dk",
    dpo_contact="dpo@kl.dk",
    purposes="At afvikle konferencen",
    legal_basis="Databeskyttelsesforordningens artikel 6, stk. 1, litra f.",
    recipients="Hotellet får en deltagerliste",
    retention="Oplysningerne slettes et år efter konferencen",
)
# Access, rectification, erasure, restriction, objection, portability.
RIGHTS = ("indsigt", "berigtiget", "slettet", "begrænset", "indsigelse", "dataportabilitet")
LABELS = (
    "Dataansvarlig",
    "Databeskyttelsesrådgiver",
    "Formål",
    "Retsgrundlag",
    "Oplysninger",
    "Kilde",
    "Modtagere",
    "Opbevaring",
    "Dine rettigheder",
    "Klage",
)


def notice_to_colleague(renderer: Renderer, conf: Conference, recipient: Person = JENS) -> Rendered:
    notice = replace(sample_notice(Kind.SUBSTITUTION_IN, conf), recipient=recipient)
    return renderer.render_notice(notice, conference_facts(conf), conf.tz)


def text_items(text: str) -> list[str]:
    section = text.split("\nDINE PERSONOPLYSNINGER\n", 1)[1].split("\n\n", 1)[0]
    return [line.removeprefix("- ") for line in section.splitlines() if line.startswith("- ")]


def html_items(html: str) -> list[str]:
    section = html.split(">Dine personoplysninger</h2>", 1)[1].split("</ul>", 1)[0]
    items = re.findall(r"<li[^>]*>(.*?)</li>", section, re.DOTALL)
    return [unescape(re.sub(r"<[^>]*>", "", item)) for item in items]


def items(out: Rendered) -> dict[str, str]:
    """Label -> text of each item, the same in both parts (the contact heading aside)."""
    text = text_items(out.text)
    assert [i.replace("KONTAKT", "Kontakt") for i in text] == html_items(out.html)
    labelled = dict(item.split(": ", 1) for item in text)
    assert tuple(labelled) == LABELS
    return labelled


def test_the_shipped_file_points_to_the_policy_for_what_it_does_not_state(
    renderer: Renderer, conference: Conference
) -> None:
    out = notice_to_colleague(renderer, conference)
    said = items(out)
    assert said["Dataansvarlig"] == "KL. Kontakt: se adressen under KONTAKT nedenfor."
    for label in ("Databeskyttelsesrådgiver", "Formål", "Retsgrundlag", "Modtagere", "Opbevaring"):
        assert said[label] == SEE_POLICY, label
    assert said["Oplysninger"] == (
        "dit navn, din mailadresse, din organisation og dit tilmeldingsnummer."
    )
    assert said["Kilde"] == "Mette Sørensen (Aarhus Kommune), som har overdraget sin plads til dig."
    for right in RIGHTS:
        assert right in said["Dine rettigheder"], right
    assert "Datatilsynet (www.datatilsynet.dk)" in said["Klage"]
    assert "privatlivspolitik: https://www.kl.dk/om-kl/privatlivspolitik\n" in out.text
    assert "Har du spørgsmål, også om dine personoplysninger, så skriv til" in out.text
    for word in INVENTED:
        assert word not in out.text and word not in out.html, word


def test_every_item_the_file_states_is_said_as_given(
    renderer: Renderer, conference: Conference
) -> None:
    conf = conference.model_copy(update={"privacy": FULL})
    said = items(notice_to_colleague(renderer, conf))
    assert said["Dataansvarlig"] == "KL. Kontakt: privacy@kl.dk."
    assert said["Databeskyttelsesrådgiver"] == "dpo@kl.dk."
    assert said["Formål"] == "At afvikle konferencen."  # a full stop is added where missing
    assert said["Retsgrundlag"] == "Databeskyttelsesforordningens artikel 6, stk. 1, litra f."
    assert said["Modtagere"] == "Hotellet får en deltagerliste."
    assert said["Opbevaring"] == "Oplysningerne slettes et år efter konferencen."
    assert SEE_POLICY not in "".join(said.values())


def test_a_contact_other_than_the_mails_is_not_the_one_for_personal_data(
    renderer: Renderer, conference: Conference
) -> None:
    for privacy in (Privacy(), FULL):
        conf = conference.model_copy(update={"privacy": privacy})
        out = notice_to_colleague(renderer, conf)
        assert "også om dine personoplysninger" not in out.text + out.html
    unset = conference.model_copy(update={"privacy": Privacy()})
    said = items(notice_to_colleague(renderer, unset))
    assert said["Dataansvarlig"] == f"KL. Kontakt: {SEE_POLICY}"


def test_an_organisation_nobody_gave_is_not_listed(
    renderer: Renderer, conference: Conference
) -> None:
    said = items(notice_to_colleague(renderer, conference, replace(JENS, organisation=None)))
    assert said["Oplysninger"] == "dit navn, din mailadresse og dit tilmeldingsnummer."


def test_an_unknown_privacy_key_names_the_field(conference: Conference) -> None:
    data = conference.model_dump(mode="json")
    data["privacy"] = {"dpo": "dpo@kl.dk"}
    with pytest.raises(ConfigError, match=r"privacy\.dpo"):
        parse_conference(data, source="x.toml")
