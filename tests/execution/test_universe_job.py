"""A universe named by a rule evaluated point in time, run as a job through a real worker
and the gVisor sandbox: the strategy sees ``member``, the engine holds nothing in a symbol
while it is not a member, and the manifest and the tear sheet say how the universe moved
(docs/reference-data.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pitwall.bundle import build_bundle
from pitwall.engine.validate import validate_weights
from pitwall.engine.vectorized import run_vectorized
from pitwall.models import BacktestSpec, EngineKind, JobStatus, Limits
from pitwall.notebook.event_quick_run import run_local
from pitwall.universe import UniverseReport, evaluate
from pitwall_executor.config import load_config
from pitwall_executor.datalake import Catalog, generate_dataset, sample_symbols
from pitwall_executor.execution.attempt import load_slice, with_reference, with_universe
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.stack import Stack

pytestmark = pytest.mark.sandbox

SYMBOLS = sample_symbols(8)

#: Equal weight in every candidate, members or not: the engine must drop the others.
ALL_CANDIDATES = """
import polars as pl
import pitwall

@pitwall.vectorized
def everyone(bars):
    if "member" not in bars.columns:
        raise RuntimeError("no member column")
    return bars.select("ts", "symbol", weight=pl.lit(1.0 / 8))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    root = tmp_path_factory.mktemp("universe-job")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "m", symbols=SYMBOLS, start=dt.date(2024, 1, 1),
                     end=dt.date(2024, 4, 30), seed=5, corporate_events=True)
    return Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor"))


def splitting_rule(stack: Stack) -> str:
    """A dollar-volume floor at the candidates' median in February: the weekly evaluations
    of March and April move symbols in and out of it."""
    bars, _ = load_slice(stack, BacktestSpec(dataset="m", universe=SYMBOLS,
                                             start=dt.date(2024, 2, 1),
                                             end=dt.date(2024, 2, 29)))
    daily = bars.group_by("symbol", pl.col("ts").dt.date()).agg(
        (pl.col("close") * pl.col("volume")).sum().alias("dv"))
    floor = daily.group_by("symbol").agg(pl.col("dv").mean()).get_column("dv").median()
    return f"dollar_volume_5d > {float(floor):.0f} at week_start"  # type: ignore[arg-type]


def test_a_rule_named_universe_trades_members_only_and_reports_its_moves(
        stack: Stack) -> None:
    rule = splitting_rule(stack)
    spec = BacktestSpec(dataset="m", universe=SYMBOLS, start=dt.date(2024, 3, 1),
                        end=dt.date(2024, 4, 30), universe_rule=rule, audit=False,
                        limits=Limits(timeout_s=120, memory_mb=1024),
                        # compared below with the engine run in-process on the spec's costs
                        costs_preset="frictionless")
    bundle = build_bundle({"strategy.py": ALL_CANDIDATES}, entrypoint="strategy.py")
    job_id = stack.submit(spec, bundle, researcher="t")
    assert Worker(stack).run_one(timeout=5) == job_id
    view = stack.store.get(job_id)
    assert view.status is JobStatus.COMPLETED and view.metrics is not None, view.reason
    rows = stack.store.artifacts(job_id)

    def artifact(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(
            Path(rows[name]["uri"].removeprefix("file://")).read_text())
        return loaded

    moved = artifact("manifest.json")["universe"]
    assert moved["rule"] == rule and moved["evaluations"] >= 8
    assert moved["entered"] + moved["left"] > 0 and moved["weights_zeroed"] > 0

    # The same universe in-process: members from sessions before each evaluation only.
    bars, data = load_slice(stack, spec)
    bars, corporate = with_reference(stack, spec, data["version"], bars)
    bars, members = with_universe(stack, spec, data["version"], bars, corporate)
    assert members is not None and set(members.get_column("symbol")) < set(SYMBOLS)
    first = members.filter(pl.col("day") <= dt.date(2024, 3, 1)).get_column("day").max()
    counted = UniverseReport.of(members.filter(pl.col("day") >= first))
    assert (moved["entered"], moved["left"]) == (counted.entered, counted.left)
    later = evaluate(rule, bars.filter(pl.col("ts") >= dt.datetime(2024, 4, 1, tzinfo=dt.UTC)))
    assert not later.is_empty()  # evaluations inside the run need no earlier data to exist

    # The engine executed the members' weights only: its equity is the one of weights set
    # to 0 wherever the bar's symbol is not a member.
    held = bars.select("ts", "symbol", weight=pl.when(pl.col("member")).then(1.0 / 8)
                       .otherwise(0.0))
    expected = run_vectorized(bars, validate_weights(held, bars, SYMBOLS), capital=spec.capital,
                              costs=spec.costs, corporate=corporate)
    assert view.metrics.final_equity == pytest.approx(expected.final_equity, rel=1e-12)

    header = artifact("tearsheet.json")["header"]
    assert header["universe_rule"] == rule
    assert (header["universe_entered"], header["universe_left"]) == (counted.entered,
                                                                     counted.left)


#: Equal weight in every member once a day; the broker closes what leaves.
MEMBERS_EVENT = """
import pitwall

class Members(pitwall.Strategy):
    at = "10:00"

    def on_bar(self, ctx):
        if "member" not in ctx.fields:
            raise RuntimeError("no member field")
        for symbol in ctx.symbols:
            if ctx.is_member(symbol) and ctx.price(symbol) > 0:
                ctx.order_target_percent(symbol, 1.0 / 8)
"""


def test_an_event_strategy_under_a_rule_holds_members_only(stack: Stack) -> None:
    rule = splitting_rule(stack)
    spec = BacktestSpec(dataset="m", universe=SYMBOLS, start=dt.date(2024, 3, 1),
                        end=dt.date(2024, 4, 30), universe_rule=rule, audit=False,
                        engine=EngineKind.EVENT, limits=Limits(timeout_s=300, memory_mb=1024),
                        costs_preset="frictionless")
    bundle = build_bundle({"strategy.py": MEMBERS_EVENT}, entrypoint="strategy.py",
                          kind="event")
    job_id = stack.submit(spec, bundle, researcher="t")
    assert Worker(stack).run_one(timeout=5) == job_id
    view = stack.store.get(job_id)
    assert view.status is JobStatus.COMPLETED and view.metrics is not None, view.reason
    rows = stack.store.artifacts(job_id)
    manifest = json.loads(Path(rows["manifest.json"]["uri"].removeprefix("file://")).read_text())
    moved = manifest["universe"]
    assert moved["rule"] == rule and moved["left"] > 0 and moved["positions_closed"] > 0
    # The same run in-process, on the job's bars with their member flags and actions.
    bars, data = load_slice(stack, spec)
    bars, corporate = with_reference(stack, spec, data["version"], bars)
    bars, _ = with_universe(stack, spec, data["version"], bars, corporate)
    namespace: dict[str, Any] = {}
    exec(compile(MEMBERS_EVENT, "strategy.py", "exec"), namespace)  # the test's own strategy
    local = run_local(namespace["Members"], bars, capital=spec.capital, costs=spec.costs,
                      symbols=SYMBOLS, corporate=corporate)
    assert view.metrics.final_equity == pytest.approx(local.final_equity, rel=1e-12)
    exits = local.trades().filter(pl.col("type") == "universe_exit")
    assert exits.height >= moved["positions_closed"]  # a capped close fills in parts
    assert moved["orders_refused"] == 0  # the strategy asked ctx.is_member first


def test_a_bad_rule_is_refused_with_what_to_write() -> None:
    base = {"dataset": "m", "universe": SYMBOLS, "start": dt.date(2024, 3, 1),
            "end": dt.date(2024, 4, 30)}
    with pytest.raises(ValueError, match=r"unknown 'prize'.*write e\.g\."):
        BacktestSpec(**base, universe_rule="prize > 5")


def test_the_cli_passes_a_rule_and_says_what_is_wrong_with_a_bad_one(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pitwall_executor.cli import main

    strategy = Path(__file__).resolve().parents[2] / "examples" / "sma_crossover.py"
    res = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "run", str(strategy),
                                    "--symbols", "AAPL,MSFT", "--start", "2024-03-01",
                                    "--end", "2024-03-29", "--universe-rule", "prize > 5"])
    assert res.exit_code != 0
    assert "universe_rule:" in res.output and "unknown 'prize'" in res.output, res.output
