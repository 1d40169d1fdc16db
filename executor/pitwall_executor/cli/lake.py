"""``pitwall data push`` and ``pitwall data cache``: the lake in object storage, the cache."""

from __future__ import annotations

from pathlib import Path

import click

from pitwall.errors import PitwallError
from pitwall_executor.cli.app import config_of


@click.command("push")
@click.argument("dataset")
@click.option("--to", "dest", required=True, help="Destination: s3://bucket/prefix or a folder.")
@click.option("--from", "source", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Local lake folder holding DATASET (default: the configured local lake).")
@click.option("--endpoint-url", default=None,
              help="S3-compatible endpoint (default: s3_endpoint_url of the configuration).")
@click.option("--region", default=None, help="S3 region (default: s3_region or AWS defaults).")
@click.option("--create-bucket", is_flag=True, help="Create the bucket if it does not exist.")
@click.pass_context
def push(ctx: click.Context, dataset: str, dest: str, source: Path | None,
         endpoint_url: str | None, region: str | None, create_bucket: bool) -> None:
    """Copy every version of DATASET from a local lake to object storage, verified.

    Files already there are skipped, data files go before version files, and every upload
    carries its sha256, so a worker reading the bucket gets exactly the local bytes.
    """
    from pitwall_executor.datalake.catalog import Catalog
    from pitwall_executor.datalake.lake_files import push_dataset
    from pitwall_executor.storage import open_store
    from pitwall_executor.storage.s3 import S3ObjectStore

    cfg = config_of(ctx)
    if source is None:
        if cfg.lake_url and cfg.lake_url.startswith("s3://"):
            raise click.UsageError("the configured lake is in S3; name the local lake with --from")
        source = cfg.lake_dir
    store = open_store(dest, endpoint_url=endpoint_url or cfg.s3_endpoint_url,
                       region=region or cfg.s3_region)
    try:
        if create_bucket and isinstance(store, S3ObjectStore):
            store.ensure_bucket()
        report = push_dataset(Catalog(source), dataset, store)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    click.echo(f"pushed {dataset} to {store.url}: {report.uploaded} files uploaded "
               f"({report.bytes / 2**20:,.1f} MiB), {report.skipped} already there")


@click.command("cache")
@click.option("--clear", is_flag=True, help="Evict every cached file not in use.")
@click.option("--prometheus", is_flag=True, help="Print in the Prometheus text format.")
@click.pass_context
def cache(ctx: click.Context, clear: bool, prometheus: bool) -> None:
    """Show the worker cache of an s3:// lake: hits, misses, bytes saved, evictions."""
    from pitwall_executor.datalake.cache import FileCache

    cfg = config_of(ctx)
    files = FileCache(cfg.cache_dir, cfg.cache_mb * 2**20)
    if clear:
        click.echo(f"evicted {files.evict_all()} files")
    if prometheus:
        click.echo(files.metrics_text(), nl=False)
        return
    for name, value in files.metrics().items():
        click.echo(f"{name:<18} {value:,.4g}" if isinstance(value, float) and name.endswith(
            "ratio") else f"{name:<18} {int(value):,}")
