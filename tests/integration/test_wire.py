"""What goes over the wire in DATA: leading dots doubled, line ends CRLF, one terminator."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devtools.sink import Sink
from notifier.mail.compose import Composed
from notifier.settings import Settings
from notifier.smtp import Mailer, Sent

pytestmark = pytest.mark.integration


def message(data: bytes) -> Composed:
    return Composed("k", "a@kl.dk", "b@kommune.dk", data, "<m@kl.dk>", "s", smtputf8=False)


@pytest.mark.parametrize(
    ("data", "received"),
    [
        (b"Subject: x\r\n\r\n.leading\r\n.\r\n..two\r\nend\r\n", None),
        (b"Subject: x\r\n\r\nno final line end", b"Subject: x\r\n\r\nno final line end\r\n"),
        (b"Subject: x\n\n.bare\nline\rends\n", b"Subject: x\r\n\r\n.bare\r\nline\r\nends\r\n"),
    ],
)
def test_the_server_receives_the_message_as_composed(
    make_settings: Callable[..., Settings], sink: Sink, data: bytes, received: bytes | None
) -> None:
    mailer = Mailer(make_settings())
    try:
        outcomes = mailer.send_all([message(data), message(b"Subject: y\r\n\r\n.\r\n")])
    finally:
        mailer.close()
    assert all(isinstance(o, Sent) for o in outcomes)
    # Two sessions send side by side: either may arrive first.
    got = sorted(m.data for m in sink.wait_for(2))
    assert got == [received or data, b"Subject: y\r\n\r\n.\r\n"]
