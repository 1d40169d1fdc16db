"""``pitwall deploy render``: Kubernetes manifests from a values file
(:mod:`pitwall_executor.deploy`, docs/scale-out.md "Manifests")."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("deploy")
def deploy() -> None:
    """Deployment manifests."""


@deploy.command("render")
@click.option("--values", "values_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The deployment's values (TOML; see deploy/kubernetes/values.example.toml).")
@click.option("--out", default="-", show_default=True,
              help="A directory to write manifests.yaml into, or - for stdout.")
def deploy_render(values_file: Path, out: str) -> None:
    """Render every Kubernetes object of a deployment as multi-document YAML."""
    from pitwall_executor.deploy import load_values, render, to_yaml, write_manifests
    from pitwall_executor.deploy.values import ValuesError

    try:
        objects = render(load_values(values_file))
    except ValuesError as exc:
        raise click.ClickException(str(exc)) from exc
    if out == "-":
        click.echo(to_yaml(objects), nl=False)
        return
    path = write_manifests(objects, Path(out))
    click.echo(f"{len(objects)} objects written to {path}", err=True)
