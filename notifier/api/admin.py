"""`notifier tokens create|list|revoke`: the API's tokens, from a terminal."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click
import redis

from notifier.settings import Settings
from notifier.store.tokens import Scope, TokenExists, Tokens


def _tokens(settings: Settings) -> Tokens:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    return Tokens(client)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _store_error(exc: Exception) -> click.ClickException:
    return click.ClickException(f"cannot reach Redis at NOTIFIER_REDIS_URL ({type(exc).__name__})")


def create_command(settings: Settings, name: str, scope: Scope) -> None:
    try:
        token = _tokens(settings).create(name, scope, time.time())
    except TokenExists:
        raise click.ClickException(
            f"a token named {name!r} exists; revoke it first (`notifier tokens revoke {name}`)"
        ) from None
    except redis.RedisError as exc:
        raise _store_error(exc) from None
    click.echo(f"Created token {name!r} (scope {scope}). It is shown only now; keep it secret.")
    click.echo(token)


def list_command(settings: Settings) -> None:
    try:
        found = _tokens(settings).list()
    except redis.RedisError as exc:
        raise _store_error(exc) from None
    if not found:
        click.echo("no tokens")
        return
    width = max(len("name"), *(len(t.name) for t in found))
    click.echo(f"{'name':<{width}}  {'scope':<9}  {'created':<23}  revoked")
    for t in found:
        click.echo(f"{t.name:<{width}}  {t.scope:<9}  {_when(t.created):<23}  {_when(t.revoked)}")


def revoke_command(settings: Settings, name: str) -> None:
    try:
        done = _tokens(settings).revoke(name, time.time())
    except redis.RedisError as exc:
        raise _store_error(exc) from None
    if not done:
        raise click.ClickException(f"no live token named {name!r}")
    click.echo(f"Revoked token {name!r}: it no longer works.")
