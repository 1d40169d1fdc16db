"""An outage of the platform during an attempt is not the strategy's fault: the real
``pitwall worker`` (PostgreSQL, Redis, gVisor) ends the attempt ``INFRA_FAILED`` and runs
the job again, up to ``max_attempts``. An S3 lake that stays down fails the job with a
reason naming the store and the attempts; a lake file that comes back in time lets the
job complete, with the failed attempt still recorded. An in-process run (``pitwall run``)
runs the retries too, instead of returning a PENDING job."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.orchestration.conftest import SYMBOLS, Cluster, sleeper, spec
from tests.storage import s3_testserver
from tests.storage.s3_testserver import Fault, FaultProxy

from pitwall.models import JobStatus
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.datalake.lake_files import push_dataset
from pitwall_executor.orchestration.embedded import run_embedded
from pitwall_executor.stack import Stack
from pitwall_executor.storage.s3 import S3ObjectStore

pytestmark = pytest.mark.sandbox

# The session's moto server and the fault-injecting proxy in front of it.
moto_endpoint = s3_testserver.moto_endpoint
_proxy_server = s3_testserver._proxy_server
proxy = s3_testserver.proxy
proxy_url = s3_testserver.proxy_url
raw_s3 = s3_testserver.raw_s3
bucket = s3_testserver.bucket

Make = Callable[..., Cluster]
INFRA = "INFRA_FAILED"


def submit(cluster: Cluster) -> str:
    """A job that does nothing in its sandbox (no audit: only the data step matters here)."""
    return cluster.stack.submit(spec(), sleeper(0),
                                researcher="ada")


def outcomes(cluster: Cluster, job_id: str) -> list[object]:
    return [r[0] for r in cluster.rows(
        "SELECT outcome FROM attempts WHERE job_id = :j ORDER BY attempt", j=job_id)]


def pending_reasons(cluster: Cluster, job_id: str) -> list[str]:
    return [e.message or "" for e in cluster.stack.store.events(job_id)
            if e.status is JobStatus.PENDING and e.message]


def test_an_s3_lake_that_stays_down_fails_the_job_saying_it_was_not_the_strategy(
        make_cluster: Make, lake_dir: Path, bucket: str, moto_endpoint: str, proxy_url: str,
        proxy: FaultProxy) -> None:
    store = S3ObjectStore.from_url(f"s3://{bucket}/lake", endpoint_url=moto_endpoint)
    push_dataset(Catalog(lake_dir), "sample", store)
    store.close()
    cluster = make_cluster(lake_url=f"s3://{bucket}/lake", s3_endpoint_url=proxy_url,
                           max_attempts="3")
    job_id = submit(cluster)  # planned against the bucket while it was up
    proxy.inject(Fault(count=10**6))  # then S3 goes down: every request fails with 503
    cluster.worker()
    view = cluster.wait_done(job_id)

    assert view.status is JobStatus.FAILED and view.attempt == 3
    reason = view.reason or ""
    assert reason.startswith("infrastructure failure, not your strategy: "), reason
    assert f"s3://{bucket}/lake" in reason and "still failing after 6 attempts" in reason
    assert "; attempts: 3; rerun the job once the object store is reachable again" in reason
    assert outcomes(cluster, job_id) == [INFRA, INFRA, "FAILED"]
    assert [r.endswith(f"the job will run again ({n} of 3 attempts used)")
            for n, r in enumerate(pending_reasons(cluster, job_id), 1)] == [True, True]
    # Each attempt retried its reads before giving up; no sandbox ever started.
    assert len(proxy.gets("/lake/sample/data/")) >= 3 * 6
    assert view.progress < 0.1 and view.metrics is None


def test_a_lake_outage_that_ends_in_time_lets_the_job_complete(
        make_cluster: Make, tmp_path: Path) -> None:
    lake = tmp_path / "own-lake"
    snap = generate_dataset(Catalog(lake), "sample", symbols=SYMBOLS, start=dt.date(2024, 3, 1),
                            end=dt.date(2024, 3, 8), seed=5)
    cluster = make_cluster(lake_url=str(lake), max_attempts="4")
    job_id = submit(cluster)
    files = [lake / "sample" / entry.path for entry in snap.files]
    for path in files:  # the lake's disk goes away after the job was planned
        path.rename(path.with_suffix(".away"))
    cluster.worker()
    cluster.wait(job_id, lambda _v: INFRA in outcomes(cluster, job_id), timeout=60)
    for path in files:  # and comes back before the attempts run out
        path.with_suffix(".away").rename(path)
    view = cluster.wait_done(job_id)

    assert view.status is JobStatus.COMPLETED, view.reason
    assert view.metrics is not None and view.reason is None
    ended = outcomes(cluster, job_id)
    assert ended[-1] == "COMPLETED" and ended[:-1] == [INFRA] * (len(ended) - 1)
    assert view.attempt == len(ended) >= 2  # the failed attempt stays on record
    first = pending_reasons(cluster, job_id)[0]
    assert first.startswith("infrastructure failure, not your strategy: the lake could not "
                            "be read"), first
    assert first.endswith("the job will run again (1 of 4 attempts used)")
    names = set(cluster.stack.store.artifacts(job_id))
    assert {"manifest.json", "report.html", "log.txt"} <= names


def test_an_in_process_run_runs_its_retries_before_it_returns(tmp_path: Path) -> None:
    snap = generate_dataset(Catalog(tmp_path / "lake"), "sample", symbols=SYMBOLS,
                            start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 8), seed=5)
    for entry in snap.files:
        (tmp_path / "lake" / "sample" / entry.path).unlink()
    stack = Stack.from_config(load_config(environ={}, data_dir=tmp_path, sandbox="gvisor",
                                          max_attempts=2))
    view = run_embedded(stack, spec(), sleeper(0))
    assert view.status is JobStatus.FAILED and view.attempt == 2
    assert view.reason is not None and "the lake could not be read" in view.reason
    assert view.reason.endswith("; attempts: 2; rerun the job once the object store is "
                                "reachable again")
    assert stack.store.attempt_outcomes(view.id) == [INFRA, "FAILED"]
    stack.store.close()
