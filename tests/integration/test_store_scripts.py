"""The store owns the Redis data model: every key format in keys.py, every script a .lua file
that names its KEYS and ARGV, and the hot path still one EVALSHA per transition."""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import pytest
import redis
import redis.asyncio

from devtools.localredis import PrivateRedis
from notifier.domain.notice import Kind, Notice, Person
from notifier.store import keys, lua
from notifier.store.outbox import AsyncOutbox, Outbox, Settlement
from tests.conftest import ROOT

SCRIPTS = files("notifier.store").joinpath("scripts")
NAMES = sorted(p.name for p in SCRIPTS.iterdir() if p.name.endswith(".lua"))
RUNNABLE = [n for n in NAMES if not n.startswith("_")]
HELPERS = [n for n in NAMES if n.startswith("_")]


def _header(body: str) -> str:
    lines = body.splitlines()
    end = next(i for i, line in enumerate(lines) if not line.startswith("--"))
    return "\n".join(lines[:end])


def _code(body: str) -> str:
    """The script without its comments (a `--` inside a string does not occur in ours)."""
    return "\n".join(line.partition("--")[0] for line in body.splitlines())


def test_every_store_script_ships_and_is_found() -> None:
    assert {"create.lua", "claim.lua", "finish.lua", "defer.lua", "renew.lua", "due.lua"} <= set(
        RUNNABLE
    )
    assert {"skip.lua", "gate.lua", "pause.lua", "remove_unchanged.lua"} <= set(RUNNABLE)
    assert {"turn.lua", "carry.lua", "pop.lua"} <= set(RUNNABLE)
    assert HELPERS == ["_base64.lua", "_clock.lua", "_move.lua", "_order.lua", "_webhook.lua"]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"notifier.store" = ["scripts/*.lua"]' in pyproject


@pytest.mark.parametrize("name", RUNNABLE)
def test_each_script_names_every_key_and_argument_it_uses_at_the_top(name: str) -> None:
    body = SCRIPTS.joinpath(name).read_text(encoding="utf-8")
    header = _header(body)
    assert header.startswith(f"-- {name.removesuffix('.lua')}: ")
    assert "Returns" in header
    for used in set(re.findall(r"(?:KEYS|ARGV)\[\d+\]", _code(body))):
        assert used in header, f"{name}: {used} is not described in the header"


@pytest.mark.parametrize("name", NAMES)
def test_no_script_builds_a_key_from_a_string_of_its_own(name: str) -> None:
    # A key built in Lua (`prefix .. ':batch:' .. b`) would be a second definition of a key
    # format: every literal is a command, a field, a state or keys.py's template slot.
    body = SCRIPTS.joinpath(name).read_text(encoding="utf-8")
    literals = re.findall(r"'([^']*)'|\"([^\"]*)\"", _code(body))
    assert [s for pair in literals for s in pair if ":" in s] == []


def test_no_module_outside_keys_spells_a_key() -> None:
    found = []
    for path in sorted((ROOT / "notifier").rglob("*.py")):
        if path == ROOT / "notifier" / "store" / "keys.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            spelled = (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and f"{keys.PREFIX}:" in node.value
                and id(node) not in docstrings
            )
            prefix = isinstance(node, ast.Attribute) and node.attr == "PREFIX"
            if spelled or (prefix and ast.unparse(node) == "keys.PREFIX"):
                found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}")
    assert found == []


@pytest.mark.integration
@pytest.mark.parametrize("name", RUNNABLE)
def test_each_script_compiles_in_redis_with_its_helpers(
    name: str, redis_client: redis.Redis
) -> None:
    body = SCRIPTS.joinpath(name).read_text(encoding="utf-8")
    included = [h for h in HELPERS if h in _header(body)]
    helpers = "".join(SCRIPTS.joinpath(h).read_text(encoding="utf-8") for h in included)
    assert lua.source(name) == helpers + body
    assert redis_client.script_load(lua.source(name))  # a syntax error is a ResponseError


def test_a_script_of_the_previous_layout_would_be_caught() -> None:
    # The checks above look for what they claim to: the old inline key building fails them.
    old = "-- move: x\n-- KEYS[1] msg\n-- Returns 1\nlocal bc = ARGV[1] .. ':batch:' .. b\n"
    assert re.findall(r"'([^']*)'", _code(old)) == [":batch:"]
    assert "ARGV[1]" not in _header(old)


def _commands_until(monitor: Any, marker: str) -> list[str]:
    """The command names clients sent (not those scripts ran) up to `marker`'s ECHO."""
    seen: list[str] = []
    while True:
        entry = monitor.next_command()
        if entry["command"] == f"ECHO {marker}":
            return seen
        if entry["client_type"] != "lua":
            seen.append(entry["command"].split(" ", 1)[0].upper())


def _notice(key: str) -> Notice:
    person = Person("Test Person", "test.person@example.dk")
    return Notice(key, Kind.REMINDER, "konf", key, person, batch="konf:b")


@pytest.mark.integration
def test_the_hot_path_is_one_evalsha_per_claim_and_per_finish(
    private_redis: Callable[..., PrivateRedis],
) -> None:
    # A private server: MONITOR sees every database's traffic.
    server = private_redis()
    client = redis.Redis.from_url(server.url)
    outbox = Outbox(client)
    for key in ("m1", "m2", "m3"):
        outbox.create(_notice(key), 0.0)

    async def run(monitor: Any) -> list[str]:
        aclient = redis.asyncio.Redis.from_url(server.url)
        try:
            store = AsyncOutbox(aclient, lease_seconds=60)
            first = await store.claim("m1")  # loads the scripts into this fresh server
            assert first is not None
            assert await store.finish(first, Settlement("sent", "250 ok")) == 1
            client.echo("marker-before")
            claims = await asyncio.gather(store.claim("m2"), store.claim("m3"))
            ends = [store.finish(c, Settlement("sent", "250 ok")) for c in claims if c]
            assert await asyncio.gather(*ends) == [1, 1]
            client.echo("marker-after")
        finally:
            await aclient.aclose()
        _commands_until(monitor, "marker-before")
        return _commands_until(monitor, "marker-after")

    with client.monitor() as monitor:  # type: ignore[no-untyped-call]
        sent = asyncio.run(run(monitor))
    assert sent == ["EVALSHA"] * 4
    assert outbox.counts("konf:b")["sent"] == 3
    client.close()
