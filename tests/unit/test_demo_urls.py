"""How `make demo` names a Redis it refuses (devtools/demoredis.py): never with its password,
and with a neighbouring database to choose instead."""

from __future__ import annotations

import pytest

from devtools.demoredis import another_database, masked


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/13", "redis://127.0.0.1:6379/13"),
        ("redis://:s3cret@127.0.0.1:6379/13", "redis://:****@127.0.0.1:6379/13"),
        ("rediss://demo:s3cret@redis.internal:6380/2", "rediss://demo:****@redis.internal:6380/2"),
        # A password holding "@", and one written as the user part (some clients read it so).
        ("redis://:s3@cret@127.0.0.1/0", "redis://:****@127.0.0.1/0"),
        ("redis://s3cret@127.0.0.1/0", "redis://****@127.0.0.1/0"),
        ("redis://demo:@127.0.0.1/0", "redis://demo:****@127.0.0.1/0"),
        (
            "unix:///run/redis.sock?db=13&password=s3cret",
            "unix:///run/redis.sock?db=13&password=****",
        ),
        ("redis://127.0.0.1/1?Password=s3cret&x=1", "redis://127.0.0.1/1?Password=****&x=1"),
        ("redis://:s3cret@[::1]:6379/13", "redis://:****@[::1]:6379/13"),
    ],
)
def test_the_password_is_masked(url: str, shown: str) -> None:
    assert masked(url) == shown


@pytest.mark.parametrize(
    ("url", "db", "suggested"),
    [
        ("redis://127.0.0.1:6379/13", 13, "redis://127.0.0.1:6379/14"),
        ("redis://:s3cret@127.0.0.1:6379/15", 15, "redis://:****@127.0.0.1:6379/14"),
        ("redis://127.0.0.1:6379", 0, "redis://127.0.0.1:6379/1"),
        # The number is not the URL's path: no example, the message says it in words.
        ("unix:///run/redis.sock?db=13", 13, None),
        ("redis://127.0.0.1:6379/?db=13", 13, None),
    ],
)
def test_another_database_is_suggested(url: str, db: int, suggested: str | None) -> None:
    assert another_database(url, db) == suggested
