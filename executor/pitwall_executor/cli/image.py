"""``pitwall image build``: the sandbox image, offline (:mod:`pitwall_executor.sandbox.image`)."""

from __future__ import annotations

from typing import cast

import click

from pitwall_executor.cli.app import config_of


@click.group("image")
def image() -> None:
    """The sandbox image."""


@image.command("build")
@click.option("--tag", default=None, help="image tag (default pitwall-sandbox:offline)")
@click.pass_context
def image_build(ctx: click.Context, tag: str | None) -> None:
    """Build the sandbox image offline and load it into Docker; print its digest."""
    from pitwall_executor.sandbox.image import TAG, build_image

    config = config_of(ctx)
    try:
        record = build_image(config.data_dir / "image", tag=tag or TAG)
    except Exception as exc:  # docker unreachable, disk full: say what to do
        raise click.ClickException(f"image build failed: {exc}; is the Docker engine "
                                   "running (make services)?") from exc
    click.echo(f"image {record['tag']}  {record['image']}")
    click.echo(f"rootfs sha256:{record['rootfs_sha256']}  ({record['rootfs_bytes']} bytes)")
    missing = cast(list[str], record["missing_libraries"])
    if missing:
        click.echo(f"not in this host's .venv, so not in the image: {', '.join(missing)}")
    click.echo(f"recorded in {config.data_dir / 'image' / 'image.json'}")
