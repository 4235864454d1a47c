"""One output convention for every command that prints rows: `--format table|csv|json|ndjson`.

`--json` stays as an alias (`--format json`; `ndjson` where a command streams one object a
photo), so scripts written against older releases keep working.
"""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

FORMATS = ("table", "csv", "json", "ndjson")


def output_options(json_alias: str = "json") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--format` and its `--json` alias, handed to the command as `fmt`."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Output format [default: table].")
        @click.option("--json", "as_json", is_flag=True, help=f"The same as --format {json_alias}.")
        @functools.wraps(command)
        def wrapper(*args: Any, fmt: str | None, as_json: bool, **kwargs: Any) -> Any:
            if as_json and fmt not in (None, json_alias):
                raise click.UsageError(f"--json means --format {json_alias}; it cannot be combined with --format {fmt}.")
            return command(*args, fmt=json_alias if as_json else fmt or "table", **kwargs)

        return wrapper

    return decorate


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_rows(rows: Iterable[dict[str, Any]], fmt: str, empty: str = "nothing matches") -> None:
    """Print rows (dicts with the same keys) as a table, CSV, a JSON array or JSON lines."""
    if fmt == "ndjson":
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    rows = list(rows)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        if rows:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({key: _csv_cell(value) for key, value in row.items()} for row in rows)
    elif not rows:
        click.echo(empty)
    else:
        columns = list(rows[0])
        widths = {c: max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns}
        if "path" in widths:
            widths["path"] = min(widths["path"], 60)
        click.echo("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
        for row in rows:
            click.echo("  ".join(clip(_cell(row[c]), widths[c]).ljust(widths[c]) for c in columns).rstrip())


def _csv_cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict | tuple) else value


def _cell(value: Any) -> str:
    return "" if value is None else str(value)
