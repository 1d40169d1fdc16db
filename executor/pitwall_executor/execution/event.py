"""An event-driven attempt (``spec.engine == "event"``), docs/architecture.md §2 step 4.

The sandbox never receives a file of bars: its input dir holds only ``spec.json``. The
worker starts a live sandbox session and the trusted feeder
(:mod:`pitwall_executor.execution.feeder`) streams the bars in lock-step while the broker
fills and accounts; metrics and the report are the engine's, unchanged. While it runs,
the progress events carry the broker's mark-to-market equity (the running curve). The
rest of the attempt is the template's (:mod:`.attempt`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pitwall import lane
from pitwall.engine.broker import BrokerCosts
from pitwall.engine.event_corporate import EventSetup, event_market
from pitwall.engine.event_result import EventResult
from pitwall.engine.fill_rules import FillRules
from pitwall.engine.metrics import metrics_for_spec
from pitwall.models import BacktestSpec, EngineKind, JobStatus
from pitwall_executor.execution.attempt import (
    Accounted,
    Attempt,
    AttemptResult,
    Staged,
    universe_moved,
)
from pitwall_executor.execution.feeder import FeedStats, StrategyStopped, run_lockstep
from pitwall_executor.sandbox import SandboxOutcome, affinity, runner_request

#: Least time between two progress events of a running event job: the feeder ticks about
#: 50 times a run, and a fast run must not wait on 50 database writes.
PROGRESS_EVERY_S = 0.25


class EquityProgress:
    """The feeder's ticks ``(fraction, ts_ms, equity)`` turned into progress reports that
    carry the equity points since the previous report: one report at most every
    ``every_s`` (the first tick at once), and :meth:`flush` for the rest at the end."""

    def __init__(self, report: Callable[..., None], every_s: float = PROGRESS_EVERY_S) -> None:
        self.report = report
        self.every_s = every_s
        self.points: list[tuple[int, float]] = []
        self.fraction = 0.0
        self._last = -float("inf")

    def __call__(self, fraction: float, ts_ms: int, equity: float) -> None:
        self.points.append((ts_ms, equity))
        self.fraction = fraction
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.points:
            self.report(0.1 + 0.7 * self.fraction, "feeding bars", self.points)
            self.points = []
        self._last = time.monotonic()


class EventAttempt(Attempt):
    """The feeder and the broker run beside a live sandbox session, bar by bar."""

    engine = EngineKind.EVENT
    _result: EventResult | None = None
    _stats: FeedStats | None = None
    _setup: EventSetup | None = None

    def unsupported(self) -> str | None:
        """A backend without live sessions cannot run the lock-step."""
        if callable(getattr(self.stack.backend, "start", None)):
            return None
        return (f"the {self.stack.backend.name} sandbox backend cannot run event-driven "
                "strategies (no live session); use gvisor")

    def runner_inputs(self, staged: Staged) -> tuple[dict[str, Any], pl.DataFrame | None]:
        """``spec.json`` only: the bars stay in the worker, the feeder sends them bar by bar.

        On a version with corporate actions (docs/reference-data.md §7) the market holds
        one column per security and the point-in-time adjusted prices as extra fields,
        and the broker applies the actions; ``symbols`` are the strategy's names of the
        columns (:func:`~pitwall.engine.event_corporate.event_universe`)."""
        spec = self.spec
        self._setup = setup = event_market(staged.bars, spec.universe, staged.corporate)
        return {"kind": "event", "entrypoint": staged.bundle.entrypoint, "params": spec.params,
                "seed": spec.seed, "symbols": setup.names,
                "extra_fields": list(setup.market.fields[5:]), "capital": spec.capital}, None

    def execute(self, staged: Staged) -> SandboxOutcome:
        """Start the sandbox, feed it, and wait for it. The feeder's result stays None
        when the strategy stopped (raised, timed out, was cancelled): the outcome says why."""
        spec = self.spec
        setup = self._setup
        assert setup is not None  # runner_inputs, at staging, laid out the market
        backend: Any = self.stack.backend  # an InteractiveBackend (checked by unsupported())
        lanes = bool(getattr(backend, "lanes", False))  # a backend that maps the lane
        with contextlib.ExitStack() as hold:
            # Two CPUs of its own: the pair watches the shared-memory lane (pitwall.lane);
            # else they share one over the pipes (affinity.py).
            pair = (hold.enter_context(affinity.cpu_pair())
                    if spec.limits.cpus <= 1 and lanes else None)
            lane_file = (self._lane_file(spins=lane.STRATEGY_SPINS_DEFAULT if pair else 0)
                         if lanes else None)
            with self.timed("sandbox_start"):  # a part of "sandbox", the whole execute step
                session = backend.start(runner_request(
                    self.job.id, self.workdir, spec.limits,
                    channel=lane_file.parent if lane_file is not None else None))
            return self._feed(session, setup, pair, lane_file if pair else None)

    def _lane_file(self, *, spins: int) -> Path:
        """The lane's file, in its dir (root's, 0755: the sandbox cannot add a file)."""
        channel = self.workdir / "channel"
        channel.mkdir(exist_ok=True)
        channel.chmod(0o755)
        return lane.create(channel, spins=spins)

    def _feed(self, session: Any, setup: EventSetup, pair: tuple[int, int] | None,
              lane_file: Path | None) -> SandboxOutcome:
        """Feed the started ``session`` on the CPUs it was given, then wait for it."""
        spec = self.spec
        market = setup.market
        ticks = EquityProgress(self.progress)
        # Lock-step is sequential: without a CPU pair the feeder and a one-CPU sandbox
        # share a core (affinity.py).
        pinned: contextlib.AbstractContextManager[Any] = (
            affinity.split_cpus(session, pair) if pair is not None
            else affinity.shared_cpu(session) if spec.limits.cpus <= 1
            else contextlib.nullcontext())
        try:
            with pinned:
                self._result, self._stats = run_lockstep(
                    session.stdin, session.stdout, market, capital=spec.capital,
                    costs=BrokerCosts.from_costs(spec.costs), rules=event_fill_rules(spec),
                    progress=ticks, actions=setup.actions, members=setup.members,
                    lane=lane_file)
            ts_ms, equity = self._result.equity.select(
                pl.col("ts").dt.epoch("ms"), "equity").row(-1)
            ticks.fraction = 1.0
            ticks.points.append((ts_ms, equity))  # the curve's last point
            ticks.flush()
        except StrategyStopped:
            pass
        except BaseException:
            session.kill()  # a protocol violation: stop the sandbox before reporting it
            raise
        finally:
            with contextlib.suppress(OSError):
                session.stdin.close()
            outcome: SandboxOutcome = session.wait()
        return outcome

    def account(self, staged: Staged, outcome: SandboxOutcome) -> Accounted | AttemptResult:
        """The broker already filled and accounted while feeding: metrics and the
        lock-step's figures for the manifest."""
        result, stats = self._result, self._stats
        if result is None or stats is None:
            return AttemptResult(JobStatus.FAILED, "the strategy process stopped answering the "
                                 "feeder; see the job's log")
        with self.timed("progress"):
            self.progress(0.85, "strategy finished; computing the metrics")
        with self.timed("metrics"):
            metrics = metrics_for_spec(result, staged.trusted_bars, self.spec)
        entries: dict[str, Any] = {"lockstep": {
            "bars": stats.bars, "round_trips": stats.round_trips,
            "lane_answers": stats.lane_answers, "seconds": round(stats.seconds, 3)}}
        if result.corporate is not None:  # what the version's corporate actions did
            entries["corporate_actions"] = result.corporate.summary()
        members = self._setup.members if self._setup is not None else None
        if members is not None:  # how the rule's universe moved, and what the broker did
            entries["universe"] = {**universe_moved(staged, self.spec),
                                   "orders_refused": stats.refused,
                                   "positions_closed": members.closed}
        return Accounted(result, metrics, entries)


#: The volume cap of an event run whose spec sets none (the broker's documented default).
EVENT_PARTICIPATION = 0.1


def event_fill_rules(spec: BacktestSpec) -> FillRules:
    """The spec's fill model for the broker: the vectorized engine's rules, with the event
    engine's default volume cap kept when the spec sets no cap of its own."""
    rules = FillRules.from_spec(spec.costs, spec.execution)
    if rules.participation is None:
        rules = dataclasses.replace(rules, participation=EVENT_PARTICIPATION)
    return rules
