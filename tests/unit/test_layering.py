"""The pure modules stay pure: no queue, store, network, event loop, randomness or clock."""

from __future__ import annotations

import ast

import pytest

from tests.unit.support import ROOT

PURE = (
    "errors",
    "events",
    "recipients",
    "conference",
    "danish",
    "render",
    "skeleton",
    "mime",
    "invite",
    "compose",
    "notice",
    "plan",
    "retry",
    "samples",
    "schedule",  # reminder rules: the time is passed in
    "keys",
)
FORBIDDEN_MODULES = {"celery", "redis", "aiosmtplib", "asyncio", "random", "uuid", "time", "socket"}
CLOCK_CALLS = {"now", "utcnow", "today"}


def imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement loads ("from notifier import x" loads notifier.x)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level or not node.module:
        return []
    if node.module == "notifier":
        return [f"notifier.{alias.name}" for alias in node.names]
    return [node.module]


def problems(source: str) -> list[str]:
    """Forbidden imports, imports of effectful notifier modules, and clock reads in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for module in imported(node):
                top, _, rest = module.partition(".")
                if top in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: imports {module}")
                if top == "notifier" and rest and rest.split(".")[0] not in PURE:
                    found.append(f"line {node.lineno}: imports effectful {module}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS
        ):
            found.append(f"line {node.lineno}: reads the clock with .{node.func.attr}()")
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module(module: str) -> None:
    source = (ROOT / "notifier" / f"{module}.py").read_text(encoding="utf-8")
    assert problems(source) == []


def test_checker_finds_what_it_looks_for() -> None:
    source = "\n".join(
        [
            "import redis.asyncio",
            "from time import monotonic",
            "from datetime import datetime, time",
            "from notifier import smtp, danish",
            "from notifier.store.outbox import Outbox",
            "stamp = datetime.now()",
            "day = date.today()",
        ]
    )
    assert problems(source) == [
        "line 1: imports redis.asyncio",
        "line 2: imports time",
        "line 4: imports effectful notifier.smtp",
        "line 5: imports effectful notifier.store.outbox",
        "line 6: reads the clock with .now()",
        "line 7: reads the clock with .today()",
    ]


def test_every_pure_module_exists() -> None:
    missing = [m for m in PURE if not (ROOT / "notifier" / f"{m}.py").is_file()]
    assert missing == []
