"""Helpers shared by the unit tests: where things are, and golden-file comparison."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFERENCES_DIR = ROOT / "conferences"
TEMPLATES_DIR = ROOT / "templates"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SLUG = "digitaliseringstraef-2024"


class Golden:
    """Compares output with a stored file, or rewrites the file when `update` is set.

    Run the tests with UPDATE_GOLDEN=1 to rewrite every golden file, then read the diff.
    """

    def __init__(self, folder: Path, *, update: bool) -> None:
        self.folder = folder
        self.update = update

    def check(self, name: str, actual: str | bytes) -> None:
        path = self.folder / name
        data = actual.encode("utf-8") if isinstance(actual, str) else actual
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        assert path.is_file(), f"no golden file {path}: run the tests with UPDATE_GOLDEN=1"
        expected = path.read_bytes()
        if isinstance(actual, str):  # compare as text for a readable diff
            assert actual == expected.decode("utf-8"), f"differs from {path}"
        else:
            assert actual == expected, f"differs from {path}"
