"""Reading the configuration folders: conference TOML files and mail templates.

The file-system edge of the pure packages: notifier.domain validates a conference's text and
notifier.mail renders templates it is handed, and this module is what finds and reads them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from notifier.domain.conference import Conference, parse_conference_toml
from notifier.errors import ConfigError
from notifier.mail.render import Renderer


def load_conference_file(path: Path) -> Conference:
    """Read and validate one conference TOML file; the slug defaults to the file name."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_conference_toml(text, slug=path.stem, source=str(path))


class Conferences:
    """The conference files of a folder, loaded on first use and kept."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[str, Conference] = {}

    def slugs(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.toml"))

    def __contains__(self, slug: object) -> bool:
        return isinstance(slug, str) and (self.folder / f"{slug}.toml").is_file()

    def get(self, slug: str) -> Conference:
        """The conference of that slug.

        Raises:
            ConfigError: no such file, or the file is invalid.
        """
        if slug not in self._cache:
            path = self.folder / f"{slug}.toml"
            if not path.is_file():
                raise ConfigError(f"conference {slug!r}: no file {path}")
            self._cache[slug] = load_conference_file(path)
        return self._cache[slug]


def template_loader(folder: Path) -> jinja2.BaseLoader:
    """The templates of one folder, read when a template is first used."""
    return jinja2.FileSystemLoader(folder)


@lru_cache(maxsize=8)
def renderer(folder: Path) -> Renderer:
    """The renderer of a template folder, shared by the whole process: it keeps the compiled
    templates and skeletons, which are costly to build for every mail."""
    return Renderer(template_loader(folder))
