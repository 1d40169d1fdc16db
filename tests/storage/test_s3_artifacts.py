"""Artifacts in S3 (moto's real server on loopback): a CLI run and an API run through the
real gVisor sandbox store their files as verified objects and serve them back; a lost
attempt leaves no object behind; a bad ``store_url`` says which forms work."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import ValidationError
from tests.api.apikit import Api, bundle_bytes, make_lake
from tests.e2e.cli_kit import SYMBOLS, pitwall, sample_data_dir
from tests.storage import s3_testserver

from pitwall.models import BacktestSpec, JobStatus
from pitwall_executor.config import Config, load_config
from pitwall_executor.execution import AttemptResult
from pitwall_executor.jobs.queue import Claim, MemoryQueue
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.jobs.schema import attempts
from pitwall_executor.jobs.store import MetadataStore
from pitwall_executor.orchestration.embedded import EmbeddedServer
from pitwall_executor.orchestration.recovery import RecoveryLoop
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.stack import Stack
from pitwall_executor.storage.artifacts import (
    ArtifactMissingError,
    S3ArtifactStore,
    read_artifact,
)

# The session's moto server, its boto3 client and a fresh bucket per test.
moto_endpoint = s3_testserver.moto_endpoint
raw_s3 = s3_testserver.raw_s3
bucket = s3_testserver.bucket

ROOT = Path(__file__).resolve().parents[2]
SMA = ROOT / "examples" / "sma_crossover.py"
RUN = ["--symbols", ",".join(SYMBOLS), "--start", "2024-03-04", "--end", "2024-03-15",
       "--param", "fast=5", "--param", "slow=60", "--no-audit"]
RESULT_FILES = ("metrics.json", "report.html", "equity.parquet", "log.txt")


def keys(raw_s3: Any, bucket: str, prefix: str = "") -> list[str]:
    page = raw_s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in page.get("Contents", []))


def body(raw_s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = raw_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def staged_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "artifacts-staging").rglob("*") if p.is_file()]


@pytest.mark.sandbox
def test_a_cli_run_on_an_s3_store_keeps_its_results_as_verified_objects_only(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        bucket: str, moto_endpoint: str, raw_s3: Any) -> None:
    data_dir = sample_data_dir(tmp_path_factory, end=dt.date(2024, 3, 29))
    monkeypatch.setenv("PITWALL_STORE_URL", f"s3://{bucket}/runs")
    monkeypatch.setenv("PITWALL_S3_ENDPOINT_URL", moto_endpoint)
    res = pitwall(data_dir, "run", str(SMA), *RUN)
    assert res.exit_code == 0, res.output
    job_id = res.output.split()[1].rstrip(":")
    store = MetadataStore(load_config(data_dir=data_dir).database_url)
    view = store.get(job_id)
    assert view.status is JobStatus.COMPLETED, view.reason
    prefix = f"runs/{job_id}/attempt-{view.attempt}/"
    # The period line read equity.parquet back through the store; the report is a URI.
    assert "\nperiod: 2024-03-04 to 2024-03-15, 10 trading days\n" in res.output
    assert res.output.strip().splitlines()[-1] == f"report: s3://{bucket}/{prefix}report.html"

    rows = store.artifacts(job_id)
    assert set(RESULT_FILES) <= set(rows)
    assert keys(raw_s3, bucket) == sorted(prefix + name for name in rows)
    for name, row in rows.items():
        assert row["uri"] == f"s3://{bucket}/{prefix}{name}"
        data = body(raw_s3, bucket, prefix + name)
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["size"]
    metrics = json.loads(body(raw_s3, bucket, prefix + "metrics.json"))
    assert view.metrics is not None and metrics["sharpe"] == pytest.approx(view.metrics.sharpe)
    assert b"Plotly.newPlot" in body(raw_s3, bucket, prefix + "report.html")
    assert staged_files(data_dir) == [] and not (data_dir / "artifacts-staging" / job_id).exists()
    assert not (data_dir / "artifacts").exists()

    shown = pitwall(data_dir, "jobs", "show", job_id)
    assert shown.exit_code == 0, shown.output
    assert "\nperiod: 2024-03-04 to 2024-03-15, 10 trading days\n" in shown.output
    assert f"report: s3://{bucket}/{prefix}report.html" in shown.output


@pytest.mark.sandbox
def test_the_api_serves_the_report_and_the_log_from_s3(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, bucket: str,
        moto_endpoint: str, raw_s3: Any) -> None:
    lake = make_lake(tmp_path_factory.mktemp("lake"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    cfg = Config(data_dir=data_dir, db_url=f"sqlite:///{tmp_path}/pitwall.db",
                 lake_url=str(lake), store_url=f"s3://{bucket}/api",
                 s3_endpoint_url=moto_endpoint)
    stack = Stack.from_config(cfg)
    tokens = {"alice": create_researcher(stack.store, "alice")}
    server = EmbeddedServer(stack, workers=1, report_ttl_s=30.0).start()
    api = Api(server=server, stack=stack, tokens=tokens)
    try:
        submitted = api.submit()
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 120
        while (view := api.get(f"/v1/backtests/{job_id}").json())["status"] in ("PENDING",
                                                                                "RUNNING"):
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
        assert view["status"] == "COMPLETED", view["reason"]
        prefix = f"api/{job_id}/attempt-{view['attempt']}/"

        # written after the commit: "503, retry after a second" until it is recorded
        deadline = time.monotonic() + 60
        while (report := api.get(f"/v1/backtests/{job_id}/report")).status_code == 503:
            assert time.monotonic() < deadline, report.text
            time.sleep(0.2)
        assert [r.status_code for r in report.history] == [302]
        assert "/v1/artifacts/" in report.url and report.status_code == 200
        assert report.headers["Content-Type"].startswith("text/html")
        assert report.content == body(raw_s3, bucket, prefix + "report.html")
        assert b"Plotly.newPlot" in report.content
        # The signed URL is the credential: no token needed.
        assert requests.get(report.url, timeout=10).content == report.content

        logs = api.get(f"/v1/backtests/{job_id}/logs")
        assert logs.status_code == 200
        assert logs.content == body(raw_s3, bucket, prefix + "log.txt")
        assert staged_files(data_dir) == []

        raw_s3.delete_object(Bucket=bucket, Key=prefix + "log.txt")
        gone = api.get(f"/v1/backtests/{job_id}/logs")
        assert gone.status_code == 404, gone.text
        assert gone.json()["error"] == "not_found"
        assert "log.txt" in gone.json()["message"]
        assert "no longer exists" in gone.json()["message"]
    finally:
        server.stop()
        stack.store.close()


def test_a_lost_attempt_leaves_no_object_and_no_staged_file(
        tmp_path: Path, bucket: str, moto_endpoint: str, raw_s3: Any) -> None:
    store = S3ArtifactStore(f"s3://{bucket}/p/q", tmp_path / "staging",
                            endpoint_url=moto_endpoint)
    rows = {}
    for attempt in (2, 3):
        out = store.attempt_dir("job-1", attempt)
        (out / "log.txt").write_text(f"attempt {attempt}\n")
        (out / "report.html").write_bytes(b"<html>" + bytes(range(256)) * 50 + b"</html>")
        rows[attempt] = [store.describe(out / n) for n in ("log.txt", "report.html")]
    assert keys(raw_s3, bucket) == ["p/q/job-1/attempt-2/log.txt",
                                    "p/q/job-1/attempt-2/report.html",
                                    "p/q/job-1/attempt-3/log.txt",
                                    "p/q/job-1/attempt-3/report.html"]
    cfg = Config(data_dir=tmp_path, s3_endpoint_url=moto_endpoint)
    assert read_artifact(rows[2][0]["uri"], cfg, sha256=rows[2][0]["sha256"]) == b"attempt 2\n"

    store.discard("job-1", 2)
    assert keys(raw_s3, bucket) == ["p/q/job-1/attempt-3/log.txt",
                                    "p/q/job-1/attempt-3/report.html"]
    assert not (tmp_path / "staging" / "job-1" / "attempt-2").exists()
    with pytest.raises(ArtifactMissingError, match="no longer exists"):
        read_artifact(rows[2][0]["uri"], cfg)

    store.committed("job-1", 3)  # recorded: the objects stay, the staging goes
    assert len(keys(raw_s3, bucket)) == 2 and not (tmp_path / "staging" / "job-1").exists()
    assert read_artifact(rows[3][1]["uri"], cfg, sha256=rows[3][1]["sha256"]).startswith(b"<html>")

    with pytest.raises(ValueError, match="refusing"):
        store.attempt_dir("../etc", 1)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    with pytest.raises(ValueError, match="staging folder"):
        store.describe(outside)


def _stack_with_a_running_job(tmp_path: Path, store_url: str,
                              endpoint: str) -> tuple[Stack, str, int]:
    cfg = Config(data_dir=tmp_path / "data", store_url=store_url, s3_endpoint_url=endpoint)
    stack = Stack.from_config(cfg)
    spec = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 8))
    bundle = bundle_bytes()
    job_id = stack.store.create_job(spec=spec, researcher="alice", bundle=bundle,
                                    bundle_sha256=hashlib.sha256(bundle).hexdigest(),
                                    data_version=None)
    attempt = stack.store.start_attempt(job_id, "test-worker")
    assert attempt is not None
    out = stack.artifacts.attempt_dir(job_id, attempt)
    (out / "log.txt").write_text("hello\n")
    return stack, job_id, attempt


def test_the_worker_deletes_the_uploads_of_an_attempt_that_was_taken_back(
        tmp_path: Path, bucket: str, moto_endpoint: str, raw_s3: Any) -> None:
    stack, job_id, attempt = _stack_with_a_running_job(tmp_path, f"s3://{bucket}/a",
                                                       moto_endpoint)
    out = stack.artifacts.attempt_dir(job_id, attempt)
    assert stack.store.hand_back(job_id, attempt)  # recovery took the attempt back
    Worker(stack)._record(Claim(job_id, "t", 1), attempt,
                          AttemptResult(JobStatus.FAILED, "boom", files=(out / "log.txt",)))
    assert stack.store.get(job_id).status is JobStatus.PENDING
    assert stack.store.artifacts(job_id) == {}
    assert keys(raw_s3, bucket) == [] and not out.exists()
    stack.store.close()


@pytest.mark.parametrize("where", ["s3", "folder"])
def test_recovery_removes_what_a_dead_workers_attempt_stored(
        tmp_path: Path, bucket: str, moto_endpoint: str, raw_s3: Any, where: str) -> None:
    url = f"s3://{bucket}/a" if where == "s3" else str(tmp_path / "artifacts")
    stack, job_id, attempt = _stack_with_a_running_job(tmp_path, url, moto_endpoint)
    out = stack.artifacts.attempt_dir(job_id, attempt)
    stack.artifacts.describe(out / "log.txt")  # uploaded (S3), then the worker died
    _, other, live = _stack_with_a_running_job(tmp_path, url, moto_endpoint)  # still beating
    live_dir = stack.artifacts.attempt_dir(other, live)
    stack.artifacts.describe(live_dir / "log.txt")
    with stack.store.engine.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.job_id == job_id).values(
            heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)))
    loop = RecoveryLoop(stack.store, MemoryQueue(), stale_after_s=60, max_attempts=3,
                        artifacts=stack.artifacts)
    loop.tick()
    assert stack.store.get(job_id).status is JobStatus.PENDING
    assert not out.exists() and live_dir.is_dir()  # the live attempt keeps its files
    if where == "s3":
        assert keys(raw_s3, bucket) == [f"a/{other}/attempt-{live}/log.txt"]
    stack.store.close()


@pytest.mark.parametrize(("ended", "recorded"), [(JobStatus.COMPLETED, JobStatus.FAILED),
                                                  (JobStatus.CANCELLED, JobStatus.CANCELLED)])
def test_results_that_cannot_be_uploaded_are_reported_in_the_reason(
        tmp_path: Path, moto_endpoint: str, raw_s3: Any, ended: JobStatus,
        recorded: JobStatus) -> None:
    stack, job_id, attempt = _stack_with_a_running_job(tmp_path, "s3://no-such-bucket-pw/x",
                                                       moto_endpoint)
    out = stack.artifacts.attempt_dir(job_id, attempt)
    reason = None if ended is JobStatus.COMPLETED else "cancelled by alice"
    Worker(stack)._record(Claim(job_id, "t", 1), attempt,
                          AttemptResult(ended, reason, files=(out / "log.txt",)))
    view = stack.store.get(job_id)
    assert view.status is recorded and view.metrics is None
    assert view.reason is not None and "could not be stored" in view.reason
    assert "bucket 'no-such-bucket-pw' of store_url s3://no-such-bucket-pw/x does not exist" \
        in view.reason
    assert reason is None or view.reason.startswith(reason)
    assert stack.store.artifacts(job_id) == {} and not out.exists()
    stack.store.close()


def test_store_url_accepts_folders_and_s3_and_names_the_forms_otherwise(tmp_path: Path) -> None:
    env = {"PITWALL_DATA_DIR": str(tmp_path)}
    s3 = load_config({**env, "PITWALL_STORE_URL": "s3://pitwall-artifacts/prod/runs"})
    assert s3.artifacts_dir == tmp_path / "artifacts-staging"
    assert load_config({**env, "PITWALL_STORE_URL": "s3://pitwall-artifacts"}).store_url
    assert load_config({**env, "PITWALL_STORE_URL": "file:///srv/a"}).artifacts_dir == \
        Path("/srv/a")
    assert load_config({**env, "PITWALL_STORE_URL": "/srv/b"}).artifacts_dir == Path("/srv/b")
    for bad, why in (("gs://bucket/x", "s3://bucket/prefix"),
                     ("s3://Bad_Bucket/x", "valid S3 bucket"), ("s3://", "valid S3 bucket")):
        with pytest.raises(ValidationError, match="store_url") as info:
            load_config({**env, "PITWALL_STORE_URL": bad})
        assert why in str(info.value)


def test_the_cli_rejects_a_bad_store_url_before_doing_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITWALL_STORE_URL", "ftp://host/artifacts")
    res = pitwall(tmp_path, "jobs", "list")
    assert res.exit_code != 0
    assert "bad configuration" in res.output and "ftp://host/artifacts" in res.output
    assert "s3://bucket/prefix" in res.output
    assert list(tmp_path.iterdir()) == []
