"""The fill model: participation cap with carry-over, square-root impact, lots and the
minimum notional, presets, and the same fills in the vectorized and the event engine."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from engine_bars import make_weights, minute, random_walk_bars, three_symbol_case

from pitwall.engine import run_vectorized
from pitwall.engine.broker import Broker, BrokerCosts
from pitwall.engine.event_result import build_result
from pitwall.engine.fill_rules import FillRules
from pitwall.engine.market import Market
from pitwall.errors import DataError
from pitwall.models import (
    COSTS_PRESETS,
    DEFAULT_COSTS_PRESET,
    BacktestSpec,
    Costs,
    Execution,
    resolve_costs_preset,
)
from pitwall.orders import OrderType

MARKET = int(OrderType.MARKET)


def flat_bars(n: int, *, price: float = 10.0, high: float = 10.5, low: float = 9.5,
              volume: float = 1000.0) -> pl.DataFrame:
    """One symbol "A" whose every bar opens and closes at ``price``."""
    return pl.DataFrame({
        "ts": [minute(i) for i in range(n)], "symbol": ["A"] * n, "open": [price] * n,
        "high": [high] * n, "low": [low] * n, "close": [price] * n, "volume": [volume] * n,
    }).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def sqrt_impact(y: float, high: float, low: float, qty: float, volume: float) -> float:
    """Y·σ·√(q/V) with σ = ln(high/low)/(2·√ln 2), written out again for the tests."""
    sigma = math.log(high / low) / (2 * math.sqrt(math.log(2)))
    return y * sigma * math.sqrt(qty / volume)


def test_participation_cap_fills_100_100_50_and_reports_the_carry() -> None:
    # 25% of 10,000 at 10 is 250 shares; 10% of a 1,000-share bar is 100 per bar.
    bars = flat_bars(5)
    weights = make_weights([(0, "A", 0.25)])
    result = run_vectorized(bars, weights, capital=10_000.0, costs=Costs(),
                            execution=Execution(participation=0.1))
    trades = result.trades()
    assert trades.get_column("qty").to_list() == pytest.approx([100.0, 100.0, 50.0], rel=1e-12)
    assert trades.get_column("ts").to_list() == [minute(1), minute(2), minute(3)]
    stats = result.liquidity
    assert stats is not None
    assert stats.capped_fills == 2 and stats.carried_bars == 2
    assert stats.carried_notional == pytest.approx(150 * 10 + 50 * 10)  # left after bars 1, 2
    assert stats.skipped_trades == 0 and stats.impact_cost == 0.0
    assert result.equity.get_column("net_exposure").to_list() == pytest.approx(
        [0.0, 0.1, 0.2, 0.25, 0.25])
    assert result.n_trades == 3


def test_the_carried_order_is_not_stopped_by_the_rebalance_threshold() -> None:
    # After 200 of 250 shares the gap is 0.05 of equity, under a 0.1 threshold: it still fills.
    weights = make_weights([(0, "A", 0.25)])
    result = run_vectorized(flat_bars(5), weights, capital=10_000.0, costs=Costs(),
                            execution=Execution(participation=0.1, rebalance_threshold=0.1))
    assert result.trades().get_column("qty").to_list() == pytest.approx([100, 100, 50])


def test_impact_cost_equals_the_square_root_formula() -> None:
    y, volume = 0.8, 1000.0
    bars = flat_bars(4, price=10.0, high=10.4, low=9.8, volume=volume)
    # 502 of 10,000 is 50.2 shares; after the commission 50 round lots, under the cap.
    weights = make_weights([(0, "A", 0.0502)])
    result = run_vectorized(bars, weights, capital=10_000.0,
                            costs=Costs(commission_bps=10, impact_coefficient=y),
                            execution=Execution(participation=0.1, lot_size=1.0))
    (row,) = result.trades().iter_rows(named=True)
    impact = sqrt_impact(y, 10.4, 9.8, 50.0, volume) * 50 * 10.0
    assert row["qty"] == pytest.approx(50.0, rel=1e-12)
    assert row["cost"] == pytest.approx(impact + 0.001 * 500.0, rel=1e-12)
    assert result.liquidity is not None
    assert result.liquidity.impact_cost == pytest.approx(impact, rel=1e-12)
    # Prices never move: the equity lost is the cost, paid once.
    assert result.final_equity == pytest.approx(10_000.0 - row["cost"], rel=1e-12)
    assert result.total_cost == pytest.approx(row["cost"], rel=1e-12)


def test_lots_and_the_minimum_notional_leave_no_tiny_trades() -> None:
    bars = random_walk_bars(["A", "B"], 300, start=minute(0), seed=3, base=40.0, sigma=0.002)
    weights = pl.DataFrame({"ts": [minute(0)] * 2, "symbol": ["A", "B"],
                            "weight": [0.5, 0.5]}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    plain = run_vectorized(bars, weights, capital=50_000.0, costs=Costs())
    qty = plain.trades().get_column("qty").abs()
    assert float(qty.min()) < 0.1  # constant mix: every bar trades a sliver of drift
    ruled = run_vectorized(bars, weights, capital=50_000.0, costs=Costs(),
                           execution=Execution(lot_size=5.0, min_trade_notional=500.0))
    trades = ruled.trades()
    lots = trades.get_column("qty").to_numpy() / 5.0
    assert np.array_equal(lots, np.round(lots))  # whole lots exactly, not 760.0000000000001
    assert float(trades.get_column("notional").abs().min()) >= 500.0
    assert ruled.liquidity is not None and ruled.liquidity.skipped_trades > 0
    assert ruled.n_trades == trades.height < plain.n_trades / 10


def test_trades_under_costs_are_whole_lots_exactly() -> None:
    # With costs the engine's weights carry float noise through the cost solve; the
    # recorded quantity is still the whole number of lots the engine traded.
    bars = random_walk_bars(["A", "B"], 300, start=minute(0), seed=5, base=37.3, sigma=0.003)
    weights = pl.DataFrame({"ts": [minute(0)] * 2, "symbol": ["A", "B"],
                            "weight": [0.6, 0.3]}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    result = run_vectorized(bars, weights, capital=123_457.0,
                            costs=Costs(spread_bps=5.0, commission_bps=1.0),
                            execution=Execution(lot_size=10.0, rebalance_threshold=0.01))
    qty = result.trades().get_column("qty").to_numpy()
    assert qty.size > 1 and np.array_equal(qty % 10.0, np.zeros_like(qty))
    notional = result.trades().get_column("notional").to_numpy()
    price = result.trades().get_column("price").to_numpy()
    assert np.allclose(qty * price, notional, rtol=1e-9)  # the rounding is float noise only


def test_rules_that_never_bind_give_the_plain_engine() -> None:
    bars, weights = three_symbol_case(7)
    bars = bars.with_columns(pl.lit(1e12).alias("volume"))
    costs = Costs(commission_bps=5, commission_per_share=0.01, spread_bps=4, borrow_bps=300)
    for threshold in (0.0, 0.05):
        plain = run_vectorized(bars, weights, capital=1e4, costs=costs, execution=Execution(
            max_gross=1.5, rebalance_threshold=threshold))
        ruled = run_vectorized(bars, weights, capital=1e4, costs=costs, execution=Execution(
            max_gross=1.5, rebalance_threshold=threshold, participation=1.0))
        assert ruled.liquidity is not None and ruled.liquidity.capped_fills == 0
        for column in ("equity", "turnover", "cost", "gross_exposure", "net_exposure"):
            assert ruled.equity.get_column(column).to_numpy() == pytest.approx(
                plain.equity.get_column(column).to_numpy(), rel=1e-9, abs=1e-12)
        assert ruled.n_trades == plain.n_trades
        assert ruled.trades().get_column("cost").to_numpy() == pytest.approx(
            plain.trades().get_column("cost").to_numpy(), rel=1e-9)


def test_a_constant_weight_book_with_the_presets_threshold_trades_far_less() -> None:
    bars = random_walk_bars(["A", "B"], 2000, start=minute(0), seed=5, base=50.0, sigma=0.001)
    bars = bars.with_columns(pl.lit(1e6).alias("volume"))
    weights = pl.DataFrame({"ts": [minute(0)] * 2, "symbol": ["A", "B"],
                            "weight": [0.5, 0.5]}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    runs = {}
    for preset in ("frictionless", "retail", "institutional"):
        spec = BacktestSpec(dataset="d", universe=["A", "B"], start=dt.date(2024, 1, 2),
                            end=dt.date(2024, 1, 3), costs_preset=preset)
        runs[preset] = run_vectorized(bars, weights, capital=spec.capital, costs=spec.costs,
                                      execution=spec.execution)
    every_bar = runs["frictionless"].n_trades
    assert every_bar == 2 * 1999  # both symbols trade their drift at every open
    assert runs["retail"].n_trades < every_bar / 20
    assert runs["institutional"].n_trades < every_bar / 10
    assert runs["frictionless"].liquidity is None
    retail = runs["retail"].liquidity
    assert retail is not None and retail.impact_cost > 0
    assert runs["retail"].total_cost > retail.impact_cost  # plus half the 5 bps spread


def test_presets_fill_what_the_spec_leaves_unset_and_the_default_is_stated() -> None:
    base = {"dataset": "d", "universe": ["A"], "start": dt.date(2024, 1, 2),
            "end": dt.date(2024, 1, 3)}
    assert DEFAULT_COSTS_PRESET == "frictionless"
    plain = BacktestSpec(**base)
    assert plain.costs_preset == "frictionless"
    assert plain.costs == Costs() and plain.execution == Execution()
    spec = BacktestSpec(**base, costs_preset="institutional", costs=Costs(commission_bps=3),
                        execution={"lot_size": None})
    costs, execution = COSTS_PRESETS["institutional"]
    assert spec.costs.commission_bps == 3  # set by the spec
    assert spec.costs.spread_bps == costs["spread_bps"]
    assert spec.costs.impact_coefficient == costs["impact_coefficient"]
    assert spec.execution.lot_size is None  # set by the spec (to fractional shares)
    assert spec.execution.participation == execution["participation"]
    assert spec.execution.rebalance_threshold == execution["rebalance_threshold"]
    # A stored spec reads back as the same numbers (the preset fills nothing more).
    assert BacktestSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValueError, match="costs_preset"):
        BacktestSpec(**base, costs_preset="cheap")


#: A spec as stored before submissions resolved the preset: no ``costs_preset`` key,
#: every cost written out (a commission of 3 bps, the rest zero).
OLD_STORED_SPEC = json.dumps({
    "dataset": "d", "version": 1, "universe": ["A"], "start": "2024-01-02",
    "end": "2024-01-03", "bar_size": "1min", "engine": "vectorized", "capital": 1e6,
    "costs": {"commission_bps": 3.0, "slippage_bps": 0.0, "commission_per_share": 0.0,
              "spread_model": "fixed", "spread_bps": 0.0, "borrow_bps": 0.0,
              "impact_coefficient": 0.0},
    "execution": {"max_gross": None, "max_net": None, "leverage_policy": "clip",
                  "rebalance_threshold": 0.0, "participation": None, "lot_size": None,
                  "min_trade_notional": 0.0},
    "benchmark": None, "universe_rule": None, "risk_free": 0.0, "params": {}, "seed": 0,
    "audit": True, "audit_level": "default", "stepped": None, "data_digest": None})


def test_a_spec_stored_without_a_preset_reads_back_as_the_zero_cost_run_it_was() -> None:
    spec = BacktestSpec.model_validate_json(OLD_STORED_SPEC)
    assert spec.costs_preset == "frictionless" and spec.default_costs_preset is None
    assert spec.costs == Costs(commission_bps=3.0)  # its own numbers, nothing from a preset
    assert spec.execution == Execution()
    # It dumps as it did (plus the preset's name): no deployment default appears in it,
    # so what is derived from its JSON (the audit's seed, the manifest) does not move.
    dumped = json.loads(spec.model_dump_json())
    assert "default_costs_preset" not in dumped
    assert dumped == {**json.loads(OLD_STORED_SPEC), "costs_preset": "frictionless",
                      "limits": dumped["limits"]}
    assert BacktestSpec.model_validate_json(spec.model_dump_json()) == spec


def test_a_submission_gives_a_spec_without_a_preset_the_deployments_default() -> None:
    base = {"dataset": "d", "universe": ["A"], "start": dt.date(2024, 1, 2),
            "end": dt.date(2024, 1, 3)}
    costs, execution = COSTS_PRESETS["retail"]
    resolved = resolve_costs_preset(BacktestSpec(**base), "retail")
    assert (resolved.costs_preset, resolved.default_costs_preset) == ("retail", "retail")
    assert resolved.costs == Costs(**costs) and resolved.execution == Execution(**execution)
    # What the spec sets wins over the preset, zeros included.
    own = resolve_costs_preset(BacktestSpec(
        **base, costs=Costs(spread_bps=0.0, commission_bps=2.0),
        execution=Execution(participation=0.5, max_gross=1.0)), "retail")
    assert own.costs == Costs(commission_bps=2.0, spread_bps=0.0,
                              impact_coefficient=costs["impact_coefficient"])
    assert own.execution == Execution(**{**execution, "participation": 0.5, "max_gross": 1.0})
    # A named preset is kept, frictionless too; the default is recorded beside it.
    named = resolve_costs_preset(BacktestSpec(**base, costs_preset="frictionless"), "retail")
    assert (named.costs_preset, named.default_costs_preset) == ("frictionless", "retail")
    assert named.costs == Costs() and named.execution == Execution()
    # Stored and read back: the same numbers, whatever the default is later.
    stored = BacktestSpec.model_validate_json(own.model_dump_json())
    assert stored == own and resolve_costs_preset(stored, "frictionless").costs == own.costs


def test_a_client_sends_no_preset_when_the_spec_names_none() -> None:
    base = {"dataset": "d", "universe": ["A"], "start": dt.date(2024, 1, 2),
            "end": dt.date(2024, 1, 3)}
    spec = BacktestSpec(**base, costs=Costs(spread_bps=0.0), audit=False)
    sent = json.loads(spec.submission_json())
    assert "costs_preset" not in sent and sent["costs"] == {"spread_bps": 0.0}
    assert sent["execution"] == {} and sent["audit"] is False
    received = BacktestSpec.model_validate_json(spec.submission_json())
    assert received == spec and "costs_preset" not in received.model_fields_set
    assert resolve_costs_preset(received, "retail").costs.spread_bps == 0.0
    assert resolve_costs_preset(received, "retail").costs.impact_coefficient == 1.0
    # A dump of every field names frictionless and its zeros: that is asking for them.
    full = BacktestSpec.model_validate_json(spec.model_dump_json())
    assert resolve_costs_preset(full, "retail").costs == Costs()
    named = BacktestSpec(**base, costs_preset="institutional")
    assert json.loads(named.submission_json())["costs_preset"] == "institutional"


def test_the_fill_model_needs_volume_and_says_so() -> None:
    bars = flat_bars(3).drop("volume")
    with pytest.raises(DataError, match="'volume' column"):
        run_vectorized(bars, make_weights([(0, "A", 0.25)]), capital=1e4, costs=Costs(),
                       execution=Execution(participation=0.1))


def _broker_fills(bars: pl.DataFrame, broker: Broker, qty: float) -> pl.DataFrame:
    """A market order for ``qty`` shares placed at bar 0, then every bar executed."""
    market = Market.from_bars(bars)
    broker.submit([(1, 0, MARKET, qty, math.nan, math.nan)], [])
    for t in range(1, len(market)):
        broker.execute(t, market.data[t])
    return build_result(market, broker).trades()


def test_event_and_vectorized_engines_make_the_same_fills() -> None:
    bars = flat_bars(6, high=10.3, low=9.9, volume=1000.0)
    costs = Costs(commission_bps=10, impact_coefficient=0.5)
    execution = Execution(participation=0.1, lot_size=1.0, min_trade_notional=100.0)
    # 0.2505 of 10,000 at 10 is 250.5 shares: after the costs 250 round lots are left.
    vec = run_vectorized(bars, make_weights([(0, "A", 0.2505)]), capital=10_000.0,
                         costs=costs, execution=execution)
    broker = Broker(1, capital=10_000.0, costs=BrokerCosts.from_costs(costs),
                    rules=FillRules.from_spec(costs, execution))
    event = _broker_fills(bars, broker, 250.0)
    a, b = vec.trades(), event
    assert a.get_column("qty").to_list() == pytest.approx([100.0, 100.0, 50.0], rel=1e-12)
    assert b.get_column("qty").to_list() == [100.0, 100.0, 50.0]
    assert a.get_column("ts").to_list() == b.get_column("ts").to_list()
    assert a.get_column("price").to_list() == b.get_column("price").to_list()
    assert a.get_column("cost").to_list() == pytest.approx(b.get_column("cost").to_list(),
                                                           rel=1e-12)
    va, ev = vec.liquidity, broker.liquidity
    assert va is not None
    assert (va.capped_fills, va.carried_bars) == (ev.capped_fills, ev.carried_bars) == (2, 2)
    assert va.impact_cost == pytest.approx(ev.impact_cost, rel=1e-12)
    one = sqrt_impact(0.5, 10.3, 9.9, 100.0, 1000.0) * 100 * 10
    half = sqrt_impact(0.5, 10.3, 9.9, 50.0, 1000.0) * 50 * 10
    assert ev.impact_cost == pytest.approx(2 * one + half, rel=1e-12)


def test_the_broker_drops_an_order_under_one_lot_or_the_minimum() -> None:
    bars = flat_bars(4)
    broker = Broker(1, capital=1e4, rules=FillRules(lot_size=10.0, min_trade_notional=200.0))
    market = Market.from_bars(bars)
    broker.submit([(1, 0, MARKET, 25.0, math.nan, math.nan),   # 20 fill, 5 left: dropped
                   (2, 0, MARKET, -15.0, math.nan, math.nan)], [])  # 10 × 10 < 200: dropped
    fills = broker.execute(1, market.data[1])
    assert [(f[0], f[2]) for f in fills] == [(1, 20.0)]
    assert list(broker.open) == [1]
    assert broker.execute(2, market.data[2]) == []
    assert broker.open == {}
    assert broker.liquidity.skipped_trades == 2
    assert broker.positions[0] == 20.0


def test_a_carried_order_waits_out_a_missing_bar_and_shorts_are_capped_alike() -> None:
    bars = flat_bars(6).filter(pl.col("ts") != minute(2))  # no bar at 2: no trade there
    weights = make_weights([(0, "A", -0.25)])
    result = run_vectorized(bars, weights, capital=10_000.0, costs=Costs(),
                            execution=Execution(participation=0.1, rebalance_threshold=0.1))
    trades = result.trades()
    assert trades.get_column("ts").to_list() == [minute(1), minute(3), minute(4)]
    assert trades.get_column("qty").to_list() == pytest.approx([-100.0, -100.0, -50.0])


@pytest.mark.parametrize("bad", [{"participation": 0.0}, {"participation": 1.5},
                                 {"lot_size": 0.0}, {"min_trade_notional": -1.0},
                                 {"impact_coefficient": math.nan}])
def test_fill_rules_refuse_settings_outside_their_range(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        FillRules(**bad)


def test_the_compiled_pass_is_the_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from pitwall.engine import liquidity

    bars = random_walk_bars(["A", "B", "C"], 400, start=minute(0), seed=11, base=30.0,
                            sigma=0.003)
    bars = bars.with_columns((pl.col("volume") * (1 + pl.col("close") % 3)).alias("volume"))
    weights = pl.DataFrame({"ts": [minute(0)] * 3 + [minute(200)] * 3,
                            "symbol": ["A", "B", "C"] * 2,
                            "weight": [0.6, -0.3, 0.5, -0.2, 0.7, 0.1]}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    costs = Costs(commission_bps=3, commission_per_share=0.005, borrow_bps=100,
                  impact_coefficient=1.0)
    execution = Execution(participation=0.05, lot_size=1.0, min_trade_notional=50.0,
                          rebalance_threshold=0.002)
    compiled = run_vectorized(bars, weights, capital=2e5, costs=costs, execution=execution)
    monkeypatch.setattr(liquidity, "_loop", lambda: liquidity._liquidity_loop)
    python = run_vectorized(bars, weights, capital=2e5, costs=costs, execution=execution)
    assert compiled.equity.equals(python.equity)
    assert compiled.trades().equals(python.trades())
    assert compiled.liquidity == python.liquidity
    stats = compiled.liquidity
    assert stats is not None and stats.capped_fills > 0 and stats.skipped_trades > 0
