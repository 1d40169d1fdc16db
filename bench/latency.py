"""Click-to-result latency: submit to metrics committed, and where the time goes.

The demo job (``make demo``: 10 symbols x 6 months of ``sample@v1``, SMA crossover
30/240, vectorized, lookahead audit on) and a 1-symbol event job (the mean-reversion
example, AAPL, January 2024) are submitted through the path a user's click takes: an
embedded server (``EmbeddedServer``: the Backtest API plus one worker thread, as the lab
and ``pitwall serve`` start it) owns a fresh data dir, and the client is ``pitwall run``'s
own code beside a server (``server_client.submit`` and ``server_client.wait``, polling
every ``POLL_S``). Three set-ups, each in this one run on the same data:

* **warm pool**: ``pool_size = 1``; before each job the pool holds a ready sandbox;
* **cold**: ``pool_size = 0``; each sandbox is restored from the runner's checkpoint;
* **in-process**: ``pitwall run`` with no server running (``run_embedded``: a worker of
  the calling process), cold.

Windows, per job (wall clock; the database stamps are from the same host clock):

* ``submit->metrics``: from just before the client's POST to the first commit of the
  job's metrics: while the audit still runs, verdict pending (the progress event with
  ``data.metrics``; docs/architecture.md §2 "metrics first"), or with the terminal state
  when there is no such event (event jobs, the ``before`` contender);
* ``submit->committed``: to the commit of the job's terminal state with its final
  metrics and the audit's verdict (the status event's time in the database);
* ``submit->seen``: until the polling client has the terminal view (adds the poll);
* ``submit->report``: until the HTML report is recorded (the ``artifacts`` event);
* the stages, from the attempt's own ``timings`` (recorded with that event):
  ``queue`` (submit to the attempt's start), ``bundle``, ``data`` (the slice from the
  lake), ``stage`` (the sandbox's input dir), ``sandbox`` (start or restore, and the
  strategy; for event jobs the whole lock-step; ``sandbox_start``, an event job's
  start, is a part of it), ``validate``, ``audit``, ``engine`` (while the audit runs, in
  ``after``), ``wait_engine`` (what is left of it once the audit is done), ``metrics``,
  ``progress`` (progress events written), ``artifacts`` (log, manifest, metrics and
  equity files), ``cleanup``, ``record`` (store the files, commit),
  ``report`` and ``record_report`` (after the commit).

Two contenders, interleaved job by job in each set-up (the same load for both):
``before`` is the platform as it was (the whole report written before the commit, the
audit's and event jobs' live sessions booted, the engine run after the audit, ``pitwall
run`` polling every 0.5 s) and ``after`` as built (only metrics, equity, manifest and log
before the commit and the report after it, live sessions restored from the runner's
checkpoint, the engine run while the audit runs, 0.1 s polls).
Every run of a case must produce the same metrics whatever the set-up and contender
(asserted). Medians are printed with the before/after ratios and the demo job's targets;
the machine is shared, so figures are "(loaded)".

    .venv/bin/python bench/latency.py [--repeat 5] [--cases demo,event]
        [--modes warm,cold,inproc] [--contenders before,after]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, EngineKind, JobView, Limits
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.execution.attempt import Attempt
from pitwall_executor.execution.vectorized import VectorizedAttempt
from pitwall_executor.orchestration import server_client
from pitwall_executor.orchestration.embedded import EmbeddedServer, run_embedded
from pitwall_executor.orchestration.ownership import running_server
from pitwall_executor.sandbox.checkpoint import SnapshotStore
from pitwall_executor.sandbox.pool import PooledBackend
from pitwall_executor.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
DEMO_SYMBOLS = ["AAPL", "MSFT", "AMZN", "GOOG", "META", "NVDA", "JPM", "XOM", "JNJ", "PG"]
START, END = dt.date(2024, 1, 2), dt.date(2024, 6, 28)
EVENT_END = dt.date(2024, 1, 31)  # the event job: one symbol, one month
STAGES = ("queue", "bundle", "data", "stage", "sandbox", "sandbox_start", "validate", "audit",
          "engine", "wait_engine", "metrics", "show_metrics", "progress", "artifacts", "cleanup",
          "record", "report", "record_report")
BEFORE_POLL_S = 0.5  # server_client.POLL_S before this change
AFTER_POLL_S = server_client.POLL_S


@dataclass
class Case:
    name: str
    spec: BacktestSpec
    bundle: bytes


@dataclass
class Run:
    shown: float
    committed: float
    seen: float
    report: float
    stages: dict[str, float]
    metrics: str


@dataclass
class Rows:
    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)

    def add(self, mode: str, case: str, run: Run) -> None:
        self.runs.setdefault((mode, case), []).append(run)


def cases() -> dict[str, Case]:
    limits = Limits(timeout_s=600, memory_mb=2048)
    demo = BacktestSpec(dataset="sample", universe=DEMO_SYMBOLS, start=START, end=END,
                        params={"fast": 30, "slow": 240}, limits=limits)
    event = BacktestSpec(dataset="sample", universe=["AAPL"], start=START, end=EVENT_END,
                         engine=EngineKind.EVENT, limits=limits)
    sma = (ROOT / "examples" / "sma_crossover.py").read_bytes()
    mr = (ROOT / "examples" / "mean_reversion_event.py").read_bytes()
    return {
        "demo": Case("demo", demo, build_bundle({"strategy.py": sma},
                                                entrypoint="strategy.py")),
        "event": Case("event", event, build_bundle({"strategy.py": mr},
                                                   entrypoint="strategy.py", kind="event")),
    }


def make_stack(root: Path, pool_size: int) -> Stack:
    return Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor",
                                         pool_size=pool_size))


def lake(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=DEMO_SYMBOLS,
                     start=dt.date(2024, 1, 1), end=dt.date(2024, 6, 30), seed=7)


def measure(stack: Stack, view: JobView, t0: float, seen: float) -> Run:
    """The job's windows and stages from what the platform recorded."""
    events = stack.store.events(view.id)
    status = next(e for e in events if e.kind == "status" and e.status is not None
                  and e.status.terminal)
    deadline = time.monotonic() + 60
    while True:  # the report follows the commit
        events = stack.store.events(view.id)
        done = [e for e in events if e.kind == "artifacts"]
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert done, f"job {view.id}: no artifacts event within 60 s of its end"
    data = done[0].data or {}
    assert "report.html" in stack.store.artifacts(view.id), data
    assert "error" not in data, data
    stages = dict(data.get("timings", {}))
    assert view.started_at is not None
    stages["queue"] = view.started_at.timestamp() - t0
    assert view.metrics is not None, view.reason
    first = next((e for e in events if e.kind == "progress" and (e.data or {}).get("metrics")),
                 status)
    return Run(shown=first.at.timestamp() - t0, committed=status.at.timestamp() - t0,
               seen=seen - t0,
               report=done[0].at.timestamp() - t0, stages=stages,
               metrics=view.metrics.model_dump_json(exclude={"lookahead"}))


def via_server(stack: Stack, case: Case) -> Run:
    server = running_server(stack.config.data_dir)
    assert server is not None, "the embedded server did not publish itself"
    t0 = time.time()
    job_id = server_client.submit(server, case.spec, case.bundle)
    server_client.wait(server, job_id, stack.config.data_dir)
    seen = time.time()
    return measure(stack, stack.store.get(job_id), t0, seen)


def in_process(stack: Stack, case: Case) -> Run:
    t0 = time.time()
    view = run_embedded(stack, case.spec, case.bundle)
    seen = time.time()
    return measure(stack, view, t0, seen)


def warm_up(stack: Stack, case: Case, pool: bool) -> None:
    if pool:
        wait_pool(stack)
    in_process(stack, case) if running_server(stack.config.data_dir) is None \
        else via_server(stack, case)


def wait_pool(stack: Stack) -> None:
    backend = stack.backend
    if isinstance(backend, PooledBackend):
        assert backend.pool.wait_ready(1, 120), "the warm pool did not get ready"


def contend(contender: str) -> None:
    """Set the platform up as ``contender``: ``before`` writes the whole report before the
    commit, boots the live sessions (the audit's, an event job's) instead of restoring
    them, runs the engine after the audit, and polls as ``pitwall run`` did (0.5 s);
    ``after`` is the platform as built."""
    Attempt.report_after_commit = contender == "after"
    VectorizedAttempt.overlap_audit = contender == "after"
    SnapshotStore.sessions = contender == "after"
    server_client.POLL_S = BEFORE_POLL_S if contender == "before" else AFTER_POLL_S


def run_mode(mode: str, root: Path, chosen: list[Case], repeat: int, rows: Rows,
             contenders: list[str]) -> None:
    data_dir = root / mode
    lake(data_dir)
    stack = make_stack(data_dir, pool_size=1 if mode == "warm" else 0)
    server = (EmbeddedServer(stack, workers=1).start() if mode in ("warm", "cold")
              else None)
    try:
        for case in chosen:  # the checkpoint image, the caches, the imports
            warm_up(stack, case, pool=mode == "warm")
        for _ in range(repeat):
            for case in chosen:
                for contender in contenders:  # interleaved: the same load for both
                    contend(contender)
                    if mode == "warm":
                        wait_pool(stack)
                    else:
                        time.sleep(0.5)  # the previous job's teardown is not this one's
                    run = (via_server(stack, case) if server is not None
                           else in_process(stack, case))
                    rows.add(f"{mode}/{contender}", case.name, run)
                    stages = " ".join(f"{k}={run.stages[k]:.2f}" for k in STAGES
                                      if k in run.stages)
                    print(f"  {mode}/{contender:<6} {case.name:<5} metrics "
                          f"{run.shown:6.2f} s  committed {run.committed:6.2f} s  seen "
                          f"{run.seen:6.2f} s  report {run.report:6.2f} s  [{stages}]",
                          flush=True)
    finally:
        if server is not None:
            server.stop()
        close = getattr(stack.backend, "close", None)
        if callable(close):
            close()


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(rows: Rows, chosen: list[Case], modes: list[str]) -> None:
    print("\nmedians, seconds (loaded)")
    for case in chosen:
        runs = {m: rows.runs.get((m, case.name), []) for m in modes}
        first = next(r for rs in runs.values() for r in rs)
        for m, rs in runs.items():  # same job, same metrics, whatever the set-up
            assert all(r.metrics == first.metrics for r in rs), f"{case.name} {m}: metrics differ"
        print(f"\n{case.name}: " + " | ".join(f"{m} (n={len(r)})" for m, r in runs.items()))
        header = f"  {'stage':<16}" + "".join(f"{m:>13}" for m in modes)
        print(header)
        for stage in STAGES:
            vals = [med([r.stages[stage] for r in runs[m] if stage in r.stages]) for m in modes]
            if all(math.isnan(v) for v in vals):  # nan: a stage this engine does not have
                continue
            print(f"  {stage:<16}" + "".join(f"{v:13.3f}" for v in vals))
        for label, attr in (("submit->metrics", "shown"), ("submit->committed", "committed"),
                            ("submit->seen", "seen"), ("submit->report", "report")):
            vals = [med([getattr(r, attr) for r in runs[m]]) for m in modes]
            print(f"  {label:<16}" + "".join(f"{v:13.3f}" for v in vals))
        for m in modes:
            mode, contender = m.split("/")
            if contender != "after":
                continue
            before = runs.get(f"{mode}/before")
            if before:
                for label, attr in (("metrics", "shown"), ("committed", "committed"),
                                    ("seen", "seen")):
                    ratio = med([getattr(r, attr) for r in before]) / med(
                        [getattr(r, attr) for r in runs[m]])
                    print(f"  {mode}: submit->{label}, before / after = {ratio:.2f}x")
            if case.name == "demo":
                target = {"warm": 1.5, "cold": 3.0, "inproc": 3.0}[mode]
                for label, attr in (("metrics", "shown"), ("committed", "committed")):
                    got = med([getattr(r, attr) for r in runs[m]])
                    print(f"  target {mode}: submit->{label} {got:.2f} s <= {target:.1f} s: "
                          f"{'met' if got <= target else 'NOT met'} ({got / target:.2f} of it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cases", default="demo,event")
    parser.add_argument("--modes", default="warm,cold,inproc")
    parser.add_argument("--contenders", default="before,after")
    args = parser.parse_args()
    all_cases = cases()
    chosen = [all_cases[c] for c in args.cases.split(",")]
    contenders = args.contenders.split(",")
    rows = Rows()
    with tempfile.TemporaryDirectory(prefix="pitwall-latency-") as tmp:
        for mode in args.modes.split(","):
            run_mode(mode, Path(tmp), chosen, args.repeat, rows, contenders)
    report(rows, chosen, [f"{m}/{c}" for m in args.modes.split(",") for c in contenders])


if __name__ == "__main__":
    main()
