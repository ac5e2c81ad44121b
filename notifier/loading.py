"""Reading the configuration folders: conference TOML files and mail templates.

The file-system edge of the pure packages: notifier.domain validates a conference's text and
notifier.mail renders templates it is handed, and this module is what finds and reads them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from notifier.domain.conference import Conference, parse_conference_toml
from notifier.errors import ConfigError
from notifier.mail.render import Renderer

log = logging.getLogger(__name__)


def load_conference_file(path: Path) -> Conference:
    """Read and validate one conference TOML file; the slug defaults to the file name."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return _parse(path, content)


def _parse(path: Path, content: bytes) -> Conference:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    # As read_text did: a file saved with CRLF or CR line ends reads the same.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return parse_conference_toml(text, slug=path.stem, source=str(path))


# How long `Conferences.get` trusts what it read before it looks at the file again: an edit
# takes effect within this time. `get` runs for every message, so it must not touch the
# file system each time; once a second costs next to nothing.
CHECK_SECONDS = 1.0


@dataclass(slots=True)
class _File:
    """What was last read from one conference file."""

    content: bytes | None = None  # None: the file could not be read
    good: Conference | None = None  # the last version that validated, kept while it is broken
    problem: str = ""  # why the content last read is not in use ("" when it is)
    recheck_at: float = -math.inf  # when to look at the file again (monotonic clock)


class Conferences:
    """The conference files of a folder, each read again when it changes.

    A running worker or beat picks up an edited file without a restart. The file is looked
    at (read and compared with what was read before, so that an edit within the file
    system's timestamp resolution is not missed) at most once per `check_seconds`. A
    changed file that does not validate, or that disappeared, is reported once and the last
    version that validated is kept: messages already accepted for it can still be composed.
    A file that never validated raises ConfigError.
    """

    def __init__(
        self,
        folder: Path,
        *,
        check_seconds: float = CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.check_seconds = check_seconds
        self._clock = clock
        self._files: dict[str, _File] = {}
        self._present: dict[str, float] = {}  # slug -> until when its file counts as there

    def slugs(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.toml"))

    def __contains__(self, slug: object) -> bool:
        """Whether the folder has this conference's file. A file found is not looked for
        again for `check_seconds` (a stat per event was a sixth of the HTTP batch endpoint's
        CPU); a missing one is looked for every time, so unknown slugs are not kept."""
        if not isinstance(slug, str):
            return False
        now = self._clock()
        if self._present.get(slug, -1.0) > now:
            return True
        if (self.folder / f"{slug}.toml").is_file():
            self._present[slug] = now + self.check_seconds
            return True
        self._present.pop(slug, None)
        return False

    def get(self, slug: str) -> Conference:
        """The conference of that slug, as its file last validated.

        Raises:
            ConfigError: no such file, or the file never validated.
        """
        found = self._files.get(slug)
        now = self._clock()
        if found is None or now >= found.recheck_at:
            found = self._look(slug, found, now)
        if found.good is None:
            raise ConfigError(found.problem)
        return found.good

    def _look(self, slug: str, last: _File | None, now: float) -> _File:
        """Read the file again; parse it only if its bytes changed."""
        path = self.folder / f"{slug}.toml"
        content, problem = _read(path, slug)
        found = last or _File()
        found.recheck_at = now + self.check_seconds
        if last is not None and content == last.content:
            return found  # unchanged: any problem with it was reported when it was read
        found.content = content
        if content is not None:
            try:
                conference = _parse(path, content)
            except ConfigError as exc:
                problem = str(exc)
            else:
                return self._use(slug, found, conference)
        found.problem = problem
        if found.good is not None:
            log.error("%s; keeping the version read before", problem)
            self._files[slug] = found
        # A file that never validated is not kept: it is read again on every call, as an
        # unknown slug is, so a mistyped slug in an event cannot make this grow.
        return found

    def _use(self, slug: str, found: _File, conference: Conference) -> _File:
        if found.good is not None:
            log.info("conference file %s changed: read again", self.folder / f"{slug}.toml")
        found.good, found.problem = conference, ""
        self._files[slug] = found
        return found


def _read(path: Path, slug: str) -> tuple[bytes | None, str]:
    """The file's bytes, or None and why it cannot be read."""
    try:
        return path.read_bytes(), ""
    except FileNotFoundError:
        return None, f"conference {slug!r}: no file {path}"
    except OSError as exc:
        return None, f"{path}: cannot read: {exc.strerror}"


def template_loader(folder: Path) -> jinja2.BaseLoader:
    """The templates of one folder, read when a template is first used."""
    return jinja2.FileSystemLoader(folder)


@lru_cache(maxsize=8)
def renderer(folder: Path) -> Renderer:
    """The renderer of a template folder, shared by the whole process: it keeps the compiled
    templates and skeletons, which are costly to build for every mail."""
    return Renderer(template_loader(folder))
