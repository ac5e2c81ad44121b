"""Settings from NOTIFIER_* variables: contract defaults, and bad values name the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from notifier.errors import ConfigError
from notifier.settings import SHIPPED_CONFERENCES, load_settings

SECRET = "hunter2-Sæt-ikke-i-log"


@pytest.fixture(autouse=True)
def _no_notifier_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings in the developer's shell must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("NOTIFIER_"):
            monkeypatch.delenv(name)


def test_defaults_are_those_of_the_contract() -> None:
    s = load_settings({})
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.smtp_host, s.smtp_port) == ("127.0.0.1", 25)
    assert s.smtp_username is None
    assert s.smtp_secret() is None
    assert s.smtp_tls == "starttls"
    assert (s.retry_base_seconds, s.retry_max_seconds) == (30, 1800)
    assert s.max_attempts == 10
    assert s.conferences_dir == SHIPPED_CONFERENCES


def test_redis_url_defaults_to_the_broker_url() -> None:
    s = load_settings({"NOTIFIER_BROKER_URL": "redis://queue.kl.local:6380/2"})
    assert s.redis_url == "redis://queue.kl.local:6380/2"


def test_explicit_values_are_used() -> None:
    s = load_settings(
        {
            "NOTIFIER_REDIS_URL": "rediss://store.kl.local:6379/1",
            "NOTIFIER_SMTP_HOST": "smtp.kl.dk",
            "NOTIFIER_SMTP_PORT": "587",
            "NOTIFIER_SMTP_TLS": "tls",
            "NOTIFIER_MAX_ATTEMPTS": "3",
            "NOTIFIER_SMTP_USERNAME": "notifier",
            "NOTIFIER_SMTP_PASSWORD": SECRET,
        }
    )
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    # A rediss:// URL gets certificate verification unless it says otherwise.
    assert s.redis_url == "rediss://store.kl.local:6379/1?ssl_cert_reqs=required"
    assert (s.smtp_host, s.smtp_port, s.smtp_tls) == ("smtp.kl.dk", 587, "tls")
    assert s.max_attempts == 3
    assert s.smtp_secret() == SECRET


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NOTIFIER_SMTP_PORT": "abc"}, "NOTIFIER_SMTP_PORT"),
        ({"NOTIFIER_SMTP_PORT": "70000"}, "NOTIFIER_SMTP_PORT"),
        ({"NOTIFIER_SMTP_TLS": "ssl"}, "NOTIFIER_SMTP_TLS"),
        ({"NOTIFIER_MAX_ATTEMPTS": "0"}, "NOTIFIER_MAX_ATTEMPTS"),
        ({"NOTIFIER_BROKER_URL": "http://x"}, "NOTIFIER_BROKER_URL"),
        ({"NOTIFIER_REDIS_URL": "postgres://x/0"}, "NOTIFIER_REDIS_URL"),
        (
            {"NOTIFIER_RETRY_BASE_SECONDS": "60", "NOTIFIER_RETRY_MAX_SECONDS": "30"},
            "NOTIFIER_RETRY_MAX_SECONDS",
        ),
        ({"NOTIFIER_SMTP_USERNAME": "notifier"}, "NOTIFIER_SMTP_PASSWORD"),
    ],
    ids=[
        "port-not-a-number",
        "port-out-of-range",
        "tls-ssl",
        "max-attempts-0",
        "broker-http",
        "redis-postgres",
        "retry-max-below-base",
        "username-without-password",
    ],
)
def test_bad_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert variable in str(caught.value)


def test_password_is_not_in_an_error_message() -> None:
    env = {"NOTIFIER_SMTP_PASSWORD": SECRET, "NOTIFIER_SMTP_PORT": "abc"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


def test_password_is_not_in_repr_or_str() -> None:
    s = load_settings({"NOTIFIER_SMTP_USERNAME": "notifier", "NOTIFIER_SMTP_PASSWORD": SECRET})
    assert SECRET not in repr(s)
    assert SECRET not in str(s)
    assert SECRET not in repr(s.model_dump())


def test_password_can_come_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "smtp-password"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    s = load_settings(
        {"NOTIFIER_SMTP_USERNAME": "notifier", "NOTIFIER_SMTP_PASSWORD_FILE": str(secret_file)}
    )
    assert s.smtp_secret() == SECRET
    assert SECRET not in repr(s)
