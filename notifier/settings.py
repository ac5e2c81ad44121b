"""Settings from the environment (NOTIFIER_*), validated once at start-up."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from notifier.errors import ConfigError

__all__ = ["Settings", "load_settings"]

PREFIX = "NOTIFIER_"
SHIPPED_CONFERENCES = Path(__file__).resolve().parent.parent / "conferences"
SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


#: A relay profile's documented rate (messages per second), used when NOTIFIER_RATE_LIMIT is
#: not set: Exchange Online's SMTP client submission limit is 30 messages a minute.
PROFILE_RATES = {"exchange-online": 0.5}


class Settings(BaseSettings):
    """Everything an operator can set. Field names map to NOTIFIER_<NAME>."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore")

    # Kept out of repr: a URL may carry the Redis password (redis://:password@host).
    broker_url: str = Field("redis://127.0.0.1:6379/0", repr=False)
    redis_url: str = Field("", repr=False)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_password_file: Path | None = None
    smtp_ca_file: Path | None = None
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    # The reply to the final dot: RFC 5321 4.5.3.2.6 suggests 10 minutes. Until it comes the
    # relay may have the message, so giving up early means a resend and a likely duplicate.
    smtp_data_timeout_seconds: float = Field(600.0, gt=0)
    unknown_resends: int = Field(1, ge=0, le=10)
    smtp_connections: int = Field(4, ge=1, le=64)
    claim_lease_seconds: float = Field(90.0, ge=1)
    retry_base_seconds: float = Field(30.0, gt=0)
    retry_max_seconds: float = Field(1800.0, gt=0)
    max_attempts: int = Field(10, ge=1, le=100)
    conferences_dir: Path = SHIPPED_CONFERENCES
    templates_dir: Path = SHIPPED_TEMPLATES
    chunk_size: int = Field(100, ge=1, le=1000)
    visibility_timeout_seconds: int = Field(60, ge=10)
    sweep_seconds: float = Field(5.0, gt=0, le=300)
    # The explicit cap on messages per second for all workers together (0: none, the rate is
    # learned from the relay's throttling replies). A relay profile gives a documented cap
    # when this is not set: Exchange Online takes 30 messages a minute for SMTP submission.
    rate_limit: float = Field(0.0, ge=0)
    relay_profile: Literal["generic", "exchange-online"] = "generic"
    # Waits the relay asks for, which do not count as attempts: greylisting ("come back
    # later") and a used-up daily quota (every sender pauses).
    greylist_seconds: float = Field(300.0, gt=0, le=86_400)
    quota_pause_seconds: float = Field(3600.0, gt=0, le=86_400)
    log_format: Literal["text", "json"] = "text"
    # Bounces: each message leaves with its own envelope sender bounces+TOKEN@domain (a
    # token naming the message, signed with the secret); without an address the envelope
    # sender stays the organiser's.
    bounce_address: str | None = None
    bounce_secret: SecretStr | None = Field(None, repr=False)
    bounce_secret_file: Path | None = None
    # After a rotation: the earlier secret(s) (a comma list), accepted to verify the tokens
    # of mail sent before it until the given time (ISO 8601), never to sign.
    bounce_secret_previous: SecretStr | None = Field(None, repr=False)
    bounce_secret_previous_file: Path | None = None
    bounce_secret_previous_until: datetime | None = None
    # A full mailbox suppresses only after this many failures within this many days, the
    # first and the latest at least a day apart.
    bounce_mailbox_full_count: int = Field(3, ge=1, le=100)
    bounce_mailbox_full_days: float = Field(14.0, ge=1, le=365)
    # What `receive` and `poll` take: larger or more deeply split mail is refused (counted).
    bounce_max_bytes: int = Field(20 * 1024 * 1024, ge=64 * 1024, le=200 * 1024 * 1024)
    bounce_max_parts: int = Field(500, ge=10, le=100_000)
    # The mailbox `notifier bounces poll` reads (TLS always on and verified).
    bounce_imap_host: str | None = None
    bounce_imap_port: int = Field(993, ge=1, le=65535)
    bounce_imap_tls: Literal["tls", "starttls"] = "tls"
    bounce_imap_user: str | None = None
    bounce_imap_password: SecretStr | None = Field(None, repr=False)
    bounce_imap_password_file: Path | None = None
    bounce_imap_folder: str = "INBOX"
    bounce_imap_done_folder: str = "notifier-processed"
    bounce_imap_ca_file: Path | None = None
    # How long an address stays suppressed after its hard bounce or complaint.
    suppression_days: int = Field(365, ge=1, le=3650)
    # Signed delivery webhooks (Standard Webhooks): off unless a URL is set. The URL may
    # carry credentials, so it stays out of repr and logs.
    webhook_url: str | None = Field(None, repr=False)
    webhook_secret: SecretStr | None = Field(None, repr=False)
    webhook_secret_file: Path | None = None
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=300)
    webhook_poll_seconds: float = Field(1.0, gt=0, le=300)
    webhook_retry_base_seconds: float = Field(5.0, gt=0)
    webhook_retry_max_seconds: float = Field(3600.0, gt=0)
    webhook_give_up_seconds: float = Field(3 * 86_400.0, gt=0)

    @field_validator(
        "bounce_imap_ca_file",
        "smtp_ca_file",
        "bounce_secret_file",
        "bounce_secret_previous_file",
        mode="before",
    )
    @classmethod
    def _no_empty_path(cls, value: Any) -> Any:
        # An empty value would be the current directory ("Is a directory" much later).
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: set a file's path or leave the variable unset")
        return value

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.redis_url:
            object.__setattr__(self, "redis_url", self.broker_url)
        if not self.rate_limit and self.relay_profile in PROFILE_RATES:
            object.__setattr__(self, "rate_limit", PROFILE_RATES[self.relay_profile])
        if self.claim_lease_seconds < 2 * self.smtp_timeout_seconds:
            raise ValueError(
                "NOTIFIER_CLAIM_LEASE_SECONDS must be at least twice NOTIFIER_SMTP_TIMEOUT_SECONDS"
            )
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(
                "NOTIFIER_RETRY_MAX_SECONDS must not be below NOTIFIER_RETRY_BASE_SECONDS"
            )
        if self.smtp_username and not (self.smtp_password or self.smtp_password_file):
            raise ValueError(
                "NOTIFIER_SMTP_USERNAME is set but neither NOTIFIER_SMTP_PASSWORD"
                " nor NOTIFIER_SMTP_PASSWORD_FILE is"
            )
        _check_bounce_settings(self)
        _check_webhook_settings(self)
        for url_field in ("broker_url", "redis_url"):
            url = getattr(self, url_field)
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    f"{env_name(url_field)} must be a redis://, rediss:// or unix:// URL"
                )
            if url.startswith("rediss://") and "ssl_cert_reqs=" not in url:
                # redis-py verifies the server's certificate by default, but Celery's broker
                # transport (kombu) does not unless the URL says so.
                verified = url + ("&" if "?" in url else "?") + "ssl_cert_reqs=required"
                object.__setattr__(self, url_field, verified)
        return self

    def previous_bounce_keys(self) -> list[bytes]:
        """The earlier secrets still accepted to verify tokens (never to sign); empty when
        none is set. Whether they are still valid is `bounce_secret_previous_until`."""
        value = _secret(self.bounce_secret_previous, self.bounce_secret_previous_file)
        return [k.strip().encode("utf-8") for k in (value or "").split(",") if k.strip()]

    def bounce_key(self) -> bytes | None:
        """The secret that signs return-path tokens, from the file setting if that is used;
        None when bounces are not set up."""
        if self.bounce_address is None:
            return None
        value = _secret(self.bounce_secret, self.bounce_secret_file)
        return value.encode("utf-8") if value else None

    @property
    def webhooks_enabled(self) -> bool:
        """Whether outcomes are reported: the scripts that settle messages then also queue
        their webhook deliveries (see notifier.store.webhooks)."""
        return self.webhook_url is not None

    def webhook_key(self) -> str | None:
        """The Standard Webhooks secret (`whsec_...`), from the file setting if that is used."""
        if self.webhook_url is None:
            return None
        return _secret(self.webhook_secret, self.webhook_secret_file)

    def imap_password(self) -> str | None:
        return _secret(self.bounce_imap_password, self.bounce_imap_password_file)

    def smtp_secret(self) -> str | None:
        """The SMTP password, read from the file setting if that is used."""
        if self.smtp_password is not None:
            return self.smtp_password.get_secret_value()
        if self.smtp_password_file is not None:
            return self.smtp_password_file.read_text(encoding="utf-8").strip()
        return None


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return None


MIN_BOUNCE_SECRET = 16


def _check_bounce_settings(s: Settings) -> None:
    if s.bounce_address is None:
        return
    local, at, domain = s.bounce_address.rpartition("@")
    if not at or not local or not domain or "+" in local:
        raise ValueError(
            "NOTIFIER_BOUNCE_ADDRESS must be an address like bounces@kl.dk (without a '+')"
        )
    if s.bounce_secret is None and s.bounce_secret_file is None:
        raise ValueError(
            "NOTIFIER_BOUNCE_ADDRESS is set but neither NOTIFIER_BOUNCE_SECRET"
            " nor NOTIFIER_BOUNCE_SECRET_FILE is"
        )
    if s.bounce_secret is not None and len(s.bounce_secret.get_secret_value()) < MIN_BOUNCE_SECRET:
        raise ValueError(f"NOTIFIER_BOUNCE_SECRET must be at least {MIN_BOUNCE_SECRET} characters")
    if s.bounce_secret_file is not None and not s.bounce_secret_file.is_file():
        raise ValueError(f"NOTIFIER_BOUNCE_SECRET_FILE: no such file: {s.bounce_secret_file}")
    _check_previous_secrets(s)
    if s.bounce_imap_ca_file is not None and not s.bounce_imap_ca_file.is_file():
        raise ValueError(f"NOTIFIER_BOUNCE_IMAP_CA_FILE: no such file: {s.bounce_imap_ca_file}")


def _check_previous_secrets(s: Settings) -> None:
    given = s.bounce_secret_previous is not None or s.bounce_secret_previous_file is not None
    if s.bounce_secret_previous_file is not None and not s.bounce_secret_previous_file.is_file():
        raise ValueError(
            f"NOTIFIER_BOUNCE_SECRET_PREVIOUS_FILE: no such file: {s.bounce_secret_previous_file}"
        )
    if given and s.bounce_secret_previous_until is None:
        raise ValueError(
            "NOTIFIER_BOUNCE_SECRET_PREVIOUS is set but NOTIFIER_BOUNCE_SECRET_PREVIOUS_UNTIL "
            "is not: say until when (ISO 8601) bounces signed with it are accepted"
        )
    if given and any(len(k) < MIN_BOUNCE_SECRET for k in s.previous_bounce_keys()):
        raise ValueError(
            f"NOTIFIER_BOUNCE_SECRET_PREVIOUS: each secret must be at least "
            f"{MIN_BOUNCE_SECRET} characters"
        )
    until = s.bounce_secret_previous_until
    if until is not None and until.tzinfo is None:
        raise ValueError("NOTIFIER_BOUNCE_SECRET_PREVIOUS_UNTIL must name its time zone")


WEBHOOK_SECRET_PREFIX = "whsec_"


def _check_webhook_settings(s: Settings) -> None:
    if s.webhook_url is None:
        return
    if not s.webhook_url.startswith(("https://", "http://")):
        raise ValueError("NOTIFIER_WEBHOOK_URL must be an http:// or https:// URL")
    if s.webhook_secret is None and s.webhook_secret_file is None:
        raise ValueError(
            "NOTIFIER_WEBHOOK_URL is set but neither NOTIFIER_WEBHOOK_SECRET"
            " nor NOTIFIER_WEBHOOK_SECRET_FILE is"
        )
    if s.webhook_secret_file is not None and not s.webhook_secret_file.is_file():
        raise ValueError(f"NOTIFIER_WEBHOOK_SECRET_FILE: no such file: {s.webhook_secret_file}")
    if s.webhook_retry_max_seconds < s.webhook_retry_base_seconds:
        raise ValueError(
            "NOTIFIER_WEBHOOK_RETRY_MAX_SECONDS must not be below"
            " NOTIFIER_WEBHOOK_RETRY_BASE_SECONDS"
        )
    name = "NOTIFIER_WEBHOOK_SECRET" + ("_FILE" if s.webhook_secret is None else "")
    if not _whsec(s.webhook_key() or ""):
        raise ValueError(f"{name} must be a Standard Webhooks secret: whsec_ and base64")


def _whsec(secret: str) -> bool:
    """A Standard Webhooks secret: the prefix, then at least 16 bytes in base64 (the
    standard asks for 24 to 64; 16 is the floor of what we accept as a key)."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return False
    body = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:  # padding may be left out, as the standardwebhooks library allows
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        return False
    return len(key) >= MIN_BOUNCE_SECRET


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping.

    Raises:
        ConfigError: naming the NOTIFIER_* variable and the reason.
    """
    values: dict[str, Any] = {
        name: env[env_name(name)] for name in Settings.model_fields if env_name(name) in env
    }
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{env_name(str(loc[0]))}: {msg}" if loc else msg)
        raise ConfigError("invalid setting: " + "; ".join(problems)) from None
