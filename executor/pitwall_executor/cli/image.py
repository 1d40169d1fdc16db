"""``pitwall image build``: the sandbox image, offline (:mod:`pitwall_executor.sandbox.image`)."""

from __future__ import annotations

import click

from pitwall_executor.cli.app import config_of


@click.group("image")
def image() -> None:
    """The sandbox image."""


@image.command("build")
@click.option("--tag", default=None, help="also tag the Docker image (e.g. pitwall-sandbox:v3)")
@click.option("--docker/--no-docker", "docker_too", default=True,
              help="also import the image into the Docker engine (default: yes)")
@click.pass_context
def image_build(ctx: click.Context, tag: str | None, docker_too: bool) -> None:
    """Build the sandbox image offline from this host's .venv (both backends); print its
    digest. Backends build it on first use too: this does it ahead of time."""
    from pitwall_executor.sandbox.image import build_image

    config = config_of(ctx)
    out = config.data_dir / "image"
    try:
        record = build_image(out, tag=tag, docker_too=docker_too)
    except Exception as exc:  # docker unreachable, disk full: say what to do
        hint = (" is the Docker engine running (make services)? Or build for gVisor only "
                "with --no-docker") if docker_too else ""
        raise click.ClickException(f"image build failed: {exc};{hint}") from exc
    click.echo(f"image {record['digest']}  ({record['files']} files, "
               f"{record['bytes'] / 1e6:.0f} MB, {record['build_s']} s)")
    click.echo(f"root file system {record['rootfs']}")
    if record["docker_image"] is not None:
        click.echo(f"docker image {record['docker_image']}  ({record['docker_s']} s)"
                   + (f", tagged {record['tag']}" if record["tag"] else ""))
    missing = record["missing_libraries"]
    if missing:
        click.echo(f"not in this host's .venv, so not in the image: {', '.join(missing)}")
    click.echo(f"recorded in {out / 'image.json'}, every file in {out / 'manifest.json'}")
