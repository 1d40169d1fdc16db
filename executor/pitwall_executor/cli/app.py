"""The root ``pitwall`` group: loads the configuration every command reads.

Commands live one module per topic in this package (``run``, ``data``, ``lake``,
``serve``, ``worker``, ``image``, ``deploy``) and are attached to this group in one place,
``cli/__init__.py``. A command parses, calls the layer below and prints; runtime
objects and domain errors live below it (docs/architecture.md §3).
"""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from pitwall_executor.config import Config, load_config


def config_of(ctx: click.Context) -> Config:
    """The configuration the root group loaded (from any sub-command's context)."""
    cfg = ctx.find_root().obj
    assert isinstance(cfg, Config)
    return cfg


@click.group()
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides PITWALL_DATA_DIR.")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """Pitwall: sandboxed, reproducible backtests on minute bars."""
    try:
        ctx.obj = load_config(data_dir=data_dir)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc
