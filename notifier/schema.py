"""Write the shipped JSON Schema of the events, or check that it is current.

    python -m notifier.schema           # (re)writes schema/events.schema.json
    python -m notifier.schema --check   # exit 1 if the file is missing or stale

The schema is generated from the pydantic models in notifier.domain.events, so registration
systems in any language can validate an event before they publish it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from notifier.domain.events import event_schema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "events.schema.json"


def render_schema() -> str:
    """The schema file's exact text: sorted keys, two-space indent, UTF-8 as is, final newline."""
    return json.dumps(event_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def is_current(path: Path = SCHEMA_PATH) -> bool:
    """Whether the file at `path` holds exactly what render_schema() produces."""
    try:
        return path.read_text(encoding="utf-8") == render_schema()
    except FileNotFoundError:
        return False


def write_schema(path: Path = SCHEMA_PATH) -> None:
    """Write the schema to `path`, creating its folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_schema(), encoding="utf-8", newline="\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m notifier.schema",
        description="Write schema/events.schema.json from the event models.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the file is missing or out of date",
    )
    args = parser.parse_args(argv)
    if args.check:
        if is_current(SCHEMA_PATH):
            print(f"{SCHEMA_PATH} is up to date")
            return 0
        print(
            f"{SCHEMA_PATH} is stale or missing; regenerate it with `python -m notifier.schema`",
            file=sys.stderr,
        )
        return 1
    write_schema(SCHEMA_PATH)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
