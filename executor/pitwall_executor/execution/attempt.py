"""One attempt of one job as a fixed template (docs/architecture.md §2, steps 1–6).

:meth:`Attempt.process` runs ``before_start → execute → on_complete | on_failure``:

- :meth:`~Attempt.before_start`: a fresh work dir, the bundle, the job's slice of the lake
  (step 1–2), the sandbox's read-only input dir;
- :meth:`~Attempt.execute`: the engine's own step — run the sandbox (step 3–4);
- :meth:`~Attempt.on_complete`: the log, how the sandbox ended, the engine's trusted
  accounting (step 5), the manifest and what a client shows at once (step 6); the HTML
  report and the Parquet ledgers come back as :attr:`AttemptResult.later`, which the
  worker runs once the status and metrics are committed (the critical path is only what
  a client needs to show the result);
- :meth:`~Attempt.on_failure`: every way a run ends in an error, as a status and a sentence;
  an :class:`~pitwall.errors.InfrastructureError` becomes an :class:`Outage`, which the
  worker retries instead of blaming the strategy.

An engine (:mod:`.vectorized`, :mod:`.event`) overrides only what differs: what the
sandbox's ``spec.json`` holds, how the sandbox runs, and how its answers are accounted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import html
import json
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from pitwall import __version__ as sdk_version
from pitwall.bundle import Bundle, load_bundle
from pitwall.engine.corporate import CorporateActions
from pitwall.engine.report import metrics_json, write_parquet, write_report
from pitwall.engine.vectorized import EngineResult
from pitwall.errors import EmptyRangeError, InfrastructureError, PitwallError, StrategyOutputError
from pitwall.models import FIRST_DATE, BacktestSpec, EngineKind, JobStatus, JobView, Metrics
from pitwall.reference import exchange_day, with_adjusted
from pitwall.universe import UniverseReport, UniverseRule, evaluate, membership
from pitwall_executor.datalake.planner import load_bars, validate_request
from pitwall_executor.datalake.reference import read_reference
from pitwall_executor.sandbox import SandboxBackend, SandboxOutcome, owner
from pitwall_executor.sandbox.base import STRATEGY_FAILED_EXIT
from pitwall_executor.stack import Stack, check_data_identity
from pitwall_executor.storage.objectstore import ObjectStoreError

Progress = Callable[..., None]


@dataclass(frozen=True)
class Outage:
    """The platform, not the strategy, ended an attempt: what failed, and what must be
    true again before the job can run (completes "rerun the job once …")."""

    what: str
    rerun_when: str


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended: the status, a one-line reason, and what it produced.

    ``outage`` is set when an infrastructure failure ended it: the worker then runs the
    job again (up to ``max_attempts``) rather than recording ``status``.

    ``later`` writes the files no client needs to show the result (the HTML report, the
    trades and positions): the worker calls it once ``status``, ``metrics`` and ``files``
    are committed, and records what it returns. ``timings`` are the attempt's stage
    durations in seconds, which the worker completes and records with those files.
    """

    status: JobStatus
    reason: str | None = None
    metrics: Metrics | None = None
    files: tuple[Path, ...] = ()
    outage: Outage | None = None
    later: Callable[[], tuple[Path, ...]] | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Staged:
    """What :meth:`Attempt.before_start` prepared: the bundle, the bars and the data part
    of the manifest (dataset, pinned version, file hashes); ``corporate``: the version's
    corporate actions and listings when it has any (the bars then also carry point-in-time
    adjusted prices, :func:`with_reference`)."""

    bundle: Bundle
    bars: pl.DataFrame
    data: dict[str, Any]
    corporate: CorporateActions | None = None
    #: The benchmark's bars when it is outside the universe (never staged for the sandbox).
    benchmark: pl.DataFrame | None = None
    #: A universe rule's members at each evaluation (``day, symbol``), when the spec has one.
    members: pl.DataFrame | None = None

    @functools.cached_property
    def trusted_bars(self) -> pl.DataFrame:
        """The bars the trusted engine's metrics and report read: the slice, and the
        benchmark's bars when it is outside the universe (joined once, for both)."""
        if self.benchmark is None:
            return self.bars
        return pl.concat([self.bars, self.benchmark], how="diagonal_relaxed")


@dataclass(frozen=True)
class Accounted:
    """What an engine's trusted accounting produced from the sandbox's answers."""

    result: EngineResult
    metrics: Metrics
    manifest: dict[str, Any] = field(default_factory=dict)  # the engine's own entries
    failure: str | None = None  # fail the job, keeping its report (a flagged audit)


class Attempt(ABC):
    """One attempt of one job; subclasses are the engines (``spec.engine``)."""

    engine: ClassVar[EngineKind]
    #: Write the HTML report and the ledgers after the commit (``AttemptResult.later``);
    #: False writes them before it, as one step (bench/latency.py compares the two).
    report_after_commit: ClassVar[bool] = True

    def __init__(self, stack: Stack, job: JobView, attempt: int,
                 on_progress: Progress | None = None) -> None:
        self.stack = stack
        self.job = job
        self.spec: BacktestSpec = job.spec
        self.attempt = attempt
        self.progress: Progress = on_progress or (lambda *_a, **_k: None)
        self.workdir = stack.config.jobs_dir / job.id / f"attempt-{attempt}"
        self.out_dir = stack.artifacts.attempt_dir(job.id, attempt)
        #: Seconds spent in each stage of this attempt (:meth:`timed`), in order.
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time the block takes to ``timings[stage]`` (even when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - started
            self.timings[stage] = round(self.timings.get(stage, 0.0) + took, 6)

    def process(self) -> AttemptResult:
        """Run the attempt end to end; never raises for a strategy's or the platform's fault."""
        try:
            result = self._process()
        except PitwallError as exc:
            result = self.on_failure(exc)
        return dataclasses.replace(result, timings=self.timings)

    def _process(self) -> AttemptResult:
        try:
            refused = self.unsupported()  # may build the backend: a SandboxError is an outage
            if refused is not None:
                return AttemptResult(JobStatus.FAILED, refused)
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir.mkdir(parents=True)
            owner.mark(self.workdir)  # if this process dies, reap_orphans removes it
            staged = self.before_start()
            with self.timed("sandbox"):
                outcome = self.execute(staged)
            return self.on_complete(staged, outcome)
        finally:
            with self.timed("cleanup"):
                self.release()
                shutil.rmtree(self.workdir, ignore_errors=True)
                with contextlib.suppress(OSError):  # the job's dir, once its last attempt is gone
                    self.workdir.parent.rmdir()

    # -- the engine's part ---------------------------------------------------------------

    def unsupported(self) -> str | None:
        """Why this deployment cannot run the engine at all (no retry helps), else None."""
        return None

    def release(self) -> None:
        """Stop what the engine started beside its main run and did not use (a sandbox
        restored ahead for the lookahead audit); called once the attempt has ended."""
        return None

    @abstractmethod
    def runner_inputs(self, staged: Staged) -> tuple[dict[str, Any], pl.DataFrame | None]:
        """The sandbox's ``spec.json``, and the bars it may read as a file (None: none)."""

    @abstractmethod
    def execute(self, staged: Staged) -> SandboxOutcome:
        """Run the strategy in its sandbox over the staged inputs; how the sandbox ended."""

    @abstractmethod
    def account(self, staged: Staged, outcome: SandboxOutcome) -> Accounted | AttemptResult:
        """Fill and account the strategy's decisions, trusted; an AttemptResult ends early."""

    # -- the fixed steps -----------------------------------------------------------------

    def before_start(self) -> Staged:
        """Steps 1–2: the bundle, the job's bars, and the sandbox's read-only inputs."""
        with self.timed("bundle"):
            bundle = load_bundle(self.stack.store.bundle(self.job.bundle_sha256),
                                 max_bytes=self.stack.config.max_bundle_mb * 2**20)
        with self.timed("data"):
            bars, data = load_slice(self.stack, self.spec)
            bars, corporate = with_reference(self.stack, self.spec, data["version"], bars)
            benchmark = load_benchmark(self.stack, self.spec, data)
            bars, members = with_universe(self.stack, self.spec, data["version"], bars,
                                          corporate)
        staged = Staged(bundle, bars, data, corporate, benchmark, members)
        with self.timed("stage"):
            runner_spec, file_bars = self.runner_inputs(staged)
            stage_inputs(self.workdir, bundle, runner_spec, file_bars)
        with self.timed("progress"):
            self.progress(0.1, f"loaded {bars.height} bars")
        return staged

    def on_complete(self, staged: Staged, outcome: SandboxOutcome) -> AttemptResult:
        """Steps 5–6: the log, how the sandbox ended, the accounting, manifest and report."""
        log = self.out_dir / "log.txt"
        log.write_bytes(outcome.stderr)
        ended = interpret_outcome(outcome, self.spec)
        if ended is None:
            accounted = self.account(staged, outcome)
            if isinstance(accounted, Accounted):
                return self.report(staged, accounted, log)
            ended = accounted
        return dataclasses.replace(ended, files=(log,))

    def report(self, staged: Staged, accounted: Accounted, log: Path) -> AttemptResult:
        """Write the manifest, the metrics and the equity curve (what a client shows as
        soon as the job ends); the HTML report and the ledgers are left to ``later``."""
        with self.timed("artifacts"):
            manifest = build_manifest(self.job, self.attempt, staged, self.stack.backend,
                                      accounted.manifest)
            manifest_path = self.out_dir / "manifest.json"
            manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            # The same bytes write_report writes (it writes them again, into its own dir).
            metrics_path, equity_path = self.out_dir / "metrics.json", self.out_dir / EQUITY
            metrics_path.write_text(metrics_json(accounted.metrics), encoding="utf-8")
            write_parquet(accounted.result.equity, equity_path)
        files: tuple[Path, ...] = (metrics_path, equity_path, manifest_path, log)

        def later() -> tuple[Path, ...]:
            with self.timed("report"):
                return self.write_full_report(staged, accounted, manifest)

        deferred: Callable[[], tuple[Path, ...]] | None = later
        if not self.report_after_commit:
            files, deferred = (*files, *later()), None
        if accounted.failure is not None:
            # Metrics belong to completed jobs only; the report stays with the attempt.
            return AttemptResult(JobStatus.FAILED, accounted.failure, files=files,
                                 later=deferred)
        return AttemptResult(JobStatus.COMPLETED, metrics=accounted.metrics, files=files,
                             later=deferred)

    def write_full_report(self, staged: Staged, accounted: Accounted,
                          manifest: dict[str, Any]) -> tuple[Path, ...]:
        """The report and the ledgers, written aside and then renamed into the attempt's
        dir, so a client never reads a half-written file; the files added."""
        aside = self.out_dir / ".report"
        shutil.rmtree(aside, ignore_errors=True)
        try:
            paths = write_report(aside, result=accounted.result, metrics=accounted.metrics,
                                 manifest=manifest, bars=staged.trusted_bars,
                                 benchmark=self.spec.benchmark,
                                 asked=(self.spec.start, self.spec.end))
            added = []
            for path in paths.files:
                if path.name in COMMITTED_FIRST:
                    continue  # already recorded, same bytes
                os.replace(path, self.out_dir / path.name)
                added.append(self.out_dir / path.name)
            return tuple(added)
        finally:
            shutil.rmtree(aside, ignore_errors=True)

    def on_failure(self, exc: PitwallError) -> AttemptResult:
        """The attempt raised ``exc`` on purpose: see :func:`ended_by`."""
        return ended_by(exc)


#: The equity curve's artifact: the panel and the notebook read it once a job has ended.
EQUITY = "equity.parquet"
#: What an attempt records with its status; the rest of the report comes after.
COMMITTED_FIRST = frozenset({"metrics.json", EQUITY, "manifest.json", "log.txt"})


def fallback_report(out_dir: Path, metrics: Metrics | None, problem: str) -> Path:
    """A plain ``report.html`` for a job whose report could not be written: the reason,
    and the metrics as recorded (escaped), so every ended run with metrics has a report."""
    shown = metrics_json(metrics) if metrics is not None else "no metrics were recorded"
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Pitwall report"
            "</title></head><body><h1>Report unavailable</h1><p>The full report could not "
            f"be written: {html.escape(problem)}. The metrics below are the recorded ones; "
            "rerun the job for the full report.</p>"
            f"<pre>{html.escape(shown)}</pre></body></html>\n")
    path = out_dir / "report.html"
    tmp = out_dir / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def ended_by(exc: PitwallError) -> AttemptResult:
    """How an attempt that raised ``exc`` ends: an :class:`Outage` when the platform failed
    (the worker retries it), else FAILED with the error's sentence (the strategy's fault)."""
    if isinstance(exc, InfrastructureError):
        return AttemptResult(JobStatus.FAILED, str(exc), outage=Outage(str(exc), exc.rerun_when))
    if isinstance(exc, StrategyOutputError):
        return AttemptResult(JobStatus.FAILED, f"invalid strategy output: {exc}")
    return AttemptResult(JobStatus.FAILED, str(exc))


def load_slice(stack: Stack, spec: BacktestSpec) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Step 1: the exact bars the job may see, and the data part of its manifest."""
    snapshot = stack.catalog.snapshot(spec.dataset, spec.version)
    check_data_identity(spec, snapshot)  # this worker's lake must hold the pinned bytes
    files = validate_request(snapshot, spec.universe, spec.start, spec.end)
    try:
        bars = load_bars(stack.catalog, snapshot, spec.universe, spec.start, spec.end,
                         lake=stack.lake)
    except OSError as exc:  # the request was valid: a file the version names is unreadable
        raise ObjectStoreError(f"the lake could not be read ({exc}); the data of "
                               f"{spec.dataset}@v{snapshot.version} is unavailable") from exc
    finally:
        if stack.lake is not None:
            stack.lake.release()  # the bars are in memory: the cache may evict the files again
    data = {"dataset": spec.dataset, "version": snapshot.version,
            "digest": snapshot.content_digest,
            "files": [{"path": f.path, "sha256": f.sha256} for f in files]}
    return bars, data


def load_benchmark(stack: Stack, spec: BacktestSpec, data: dict[str, Any]) -> pl.DataFrame | None:
    """The bars of a benchmark outside the universe (None when it is in it, or there is
    none), for the trusted engine only; its files join the manifest's ``data``."""
    if spec.benchmark is None or spec.benchmark in spec.universe:
        return None
    bench = spec.model_copy(update={"universe": [spec.benchmark], "version": data["version"]})
    bars, bench_data = load_slice(stack, bench)
    data["benchmark_files"] = bench_data["files"]
    return bars


def with_universe(stack: Stack, spec: BacktestSpec, version: int, bars: pl.DataFrame,
                  corporate: CorporateActions | None,
                  ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The slice with ``member`` (whether each bar's symbol is in the rule's universe at the
    latest evaluation on or before its day) and the members at each evaluation, when the
    spec names a universe rule; else as it was (docs/reference-data.md).

    An evaluation uses only sessions before its day, so ``member`` is the same in every
    prefix of the slice. The sessions before ``start`` that the rule's windows and the
    first evaluation need are read for it here (the strategy never gets them)."""
    if spec.universe_rule is None:
        return bars, None
    rule = UniverseRule.parse(spec.universe_rule)
    longest = max((c.window for c in rule.conditions), default=0)
    warm_start = max(spec.start - dt.timedelta(days=longest * 3 // 2 + 40), FIRST_DATE)
    source = bars
    if warm_start < spec.start:
        warm = spec.model_copy(update={"start": warm_start, "version": version,
                                       "end": spec.start - dt.timedelta(days=1)})
        with contextlib.suppress(EmptyRangeError):  # the dataset starts with the run
            history, _ = load_slice(stack, warm)
            source = pl.concat([history, bars.select(history.columns)])
    listings = corporate.listings if corporate is not None else None
    members = evaluate(rule, source, listings)
    return bars.with_columns(membership(bars, members)), members


def universe_moved(staged: Staged, spec: BacktestSpec) -> dict[str, Any]:
    """The manifest's ``universe`` entry of a run with a rule: the rule and how the
    universe moved during the run, from the evaluation in force at its start."""
    members = staged.members
    assert members is not None  # a run with a rule has its members
    first_day = staged.bars.select(exchange_day(pl.col("ts")).min()).item()
    start = members.filter(pl.col("day") <= first_day).get_column("day").max()
    moved = UniverseReport.of(members if start is None else members.filter(pl.col("day") >= start))
    return {"rule": spec.universe_rule, **dataclasses.asdict(moved)}


def with_reference(stack: Stack, spec: BacktestSpec, version: int,
                   bars: pl.DataFrame) -> tuple[pl.DataFrame, CorporateActions | None]:
    """The slice with ``adj_open … adj_volume`` and the corporate actions the engine applies,
    when the version carries reference data (docs/reference-data.md); else as it was.

    Each bar's adjusted price uses only the actions announced and effective by its own
    day (``pitwall.reference.adjusted`` without ``as_of``), so every prefix of the slice
    holds the same values: a strategy may use them and the lookahead audit sees no leak.
    The raw ``open``/``close`` stay what the engine fills at; the engine applies the splits,
    dividends and delistings to the positions."""
    reference = read_reference(stack.catalog, stack.catalog.snapshot(spec.dataset, version))
    if reference.is_empty:
        return bars, None
    return (with_adjusted(bars, reference.actions),
            CorporateActions(reference.actions, reference.listings))


def stage_inputs(workdir: Path, bundle: Bundle, runner_spec: dict[str, Any],
                 bars: pl.DataFrame | None) -> None:
    """Step 2: the bundle and the sandbox's read-only input dir (spec, and bars if any)."""
    input_dir = workdir / "input"
    input_dir.mkdir(parents=True)
    if bars is not None:
        # The sandbox gets only this slice, never the lake: it cannot read past `end`.
        bars.write_ipc(input_dir / "bars.arrow", compression="uncompressed")
    (input_dir / "spec.json").write_text(json.dumps(runner_spec))
    bundle.extract(workdir / "bundle")
    for path in (workdir, input_dir, workdir / "bundle"):
        path.chmod(0o755)
    for path in input_dir.iterdir():
        path.chmod(0o444)


def interpret_outcome(outcome: SandboxOutcome, spec: BacktestSpec) -> AttemptResult | None:
    """Map how the sandbox ended to a terminal result; None when the strategy finished."""
    limits = spec.limits
    if outcome.cancelled:
        return AttemptResult(JobStatus.CANCELLED, "cancelled by the researcher")
    if outcome.timed_out:
        return AttemptResult(JobStatus.TIMED_OUT,
                             f"wall-clock limit of {limits.timeout_s:g} s exceeded; raise "
                             "limits.timeout_s or shorten the date range")
    if outcome.oom:
        return AttemptResult(JobStatus.FAILED,
                             f"memory limit of {limits.memory_mb} MiB exceeded; lower the "
                             "universe or raise limits.memory_mb")
    if outcome.exit_code == STRATEGY_FAILED_EXIT:
        return AttemptResult(JobStatus.FAILED, f"strategy raised {last_error_line(outcome.stderr)}"
                             "; see the job's log for the traceback")
    if outcome.exit_code != 0:
        return AttemptResult(JobStatus.FAILED,
                             f"the strategy process exited with code {outcome.exit_code} "
                             f"({last_error_line(outcome.stderr)}); see the job's log")
    return None


def last_error_line(stderr: bytes) -> str:
    """The last non-empty line of a log, which for a traceback names the error."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "no output"


def sandbox_record(backend: SandboxBackend) -> dict[str, str | None]:
    """The manifest's ``sandbox``: the backend and its image (for gVisor, the digest of
    everything its mounts show a job); None for a backend without one."""
    image = getattr(backend, "image", None)  # not part of the backend contract
    return {"backend": backend.name, "image": image if isinstance(image, str) else None}


def build_manifest(job: JobView, attempt: int, staged: Staged, backend: SandboxBackend,
                   engine_entries: dict[str, Any]) -> dict[str, Any]:
    """What reproduces the run (docs/architecture.md §1.3): bundle, parameters, data
    snapshot, sandbox image, SDK version, seed (in the spec), plus the engine's entries."""
    return {
        "job_id": job.id, "attempt": attempt, "bundle_sha256": job.bundle_sha256,
        "entrypoint": staged.bundle.entrypoint, "sdk_version": sdk_version,
        "engine": job.spec.engine.value, "spec": job.spec.model_dump(mode="json"),
        "data": staged.data, "sandbox": sandbox_record(backend), **engine_entries,
    }
