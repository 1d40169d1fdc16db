"""The tear sheet: its statistics against empyrical, pyfolio's drawdown table (transcribed),
round trips and attribution by hand, downsampling with exact extremes, the page's size."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from pathlib import Path

import empyrical
import numpy as np
import pandas as pd
import polars as pl
import pytest
from engine_bars import make_bars, make_weights, minute
from scipy import stats

from pitwall.engine import compute_metrics, run_vectorized, trips, validate_weights, write_report
from pitwall.engine import tearsheet as ts
from pitwall.engine.broker import Broker, BrokerCosts
from pitwall.engine.charts import MAX_POINTS, chart_data, extremes
from pitwall.engine.event_result import build_result
from pitwall.engine.market import Market
from pitwall.engine.metrics import benchmark_returns, metrics_for_spec, trading_days
from pitwall.engine.tearsheet_page import header_section
from pitwall.engine.vectorized import EngineResult
from pitwall.models import (
    BacktestSpec,
    Costs,
    TearSheet,
    resolve_costs_preset,
)
from pitwall.orders import OrderType

RNG = np.random.default_rng(17)
SERIES = [RNG.normal(0.0004, 0.012, 500), RNG.standard_t(3, 250) * 0.01,
          RNG.normal(-0.002, 0.03, 37)]
REL = 1e-9


@pytest.mark.parametrize("returns", SERIES)
@pytest.mark.parametrize("cutoff", [0.05, 0.01, 0.1])
def test_var_and_cvar_match_empyrical(returns: np.ndarray, cutoff: float) -> None:
    assert ts.value_at_risk(returns, cutoff) == pytest.approx(
        empyrical.value_at_risk(returns, cutoff), rel=REL)
    assert ts.conditional_value_at_risk(returns, cutoff) == pytest.approx(
        empyrical.conditional_value_at_risk(returns, cutoff), rel=REL)
    assert ts.value_at_risk(np.array([])) is None


@pytest.mark.parametrize("returns", SERIES)
def test_return_stats_match_empyrical_and_scipy(returns: np.ndarray) -> None:
    s = ts.return_stats(returns, risk_free=0.0001)
    assert s.total_return == pytest.approx(empyrical.cum_returns_final(returns), rel=REL)
    assert s.cagr == pytest.approx(empyrical.cagr(returns), rel=REL)
    assert s.annual_volatility == pytest.approx(empyrical.annual_volatility(returns), rel=REL)
    assert s.sharpe == pytest.approx(empyrical.sharpe_ratio(returns, risk_free=0.0001), rel=REL)
    assert s.sortino == pytest.approx(
        empyrical.sortino_ratio(returns, required_return=0.0001), rel=REL)
    assert s.max_drawdown == pytest.approx(empyrical.max_drawdown(returns), rel=REL)
    assert s.skew == pytest.approx(stats.skew(returns), rel=REL)
    assert s.kurtosis == pytest.approx(stats.kurtosis(returns), rel=REL)
    assert (s.best_day, s.worst_day) == (returns.max(), returns.min())


@pytest.mark.parametrize("returns", SERIES)
def test_relative_stats_match_empyrical(returns: np.ndarray) -> None:
    bench = 0.7 * returns + RNG.normal(0.0002, 0.006, len(returns))
    rel = ts.relative_stats(returns, bench, "B", risk_free=0.0001)
    alpha, beta = empyrical.alpha_beta(returns, bench, risk_free=0.0001)
    assert (rel.alpha, rel.beta) == (pytest.approx(alpha, rel=REL), pytest.approx(beta, rel=REL))
    excess = empyrical.excess_sharpe(returns, bench)  # = quantstats' information_ratio
    assert rel.information_ratio == pytest.approx(excess * np.sqrt(252), rel=REL)
    # empyrical's excess Sharpe is mean(active) / daily tracking error
    daily_te = np.mean(returns - bench) / excess
    assert rel.tracking_error == pytest.approx(daily_te * np.sqrt(252), rel=REL)
    assert rel.correlation == pytest.approx(np.corrcoef(returns, bench)[0, 1], rel=REL)
    flat = ts.relative_stats(returns, returns, "self")
    assert flat.tracking_error == 0.0 and flat.information_ratio is None


def test_annual_and_monthly_returns_match_empyrical_aggregate() -> None:
    days = pd.bdate_range("2023-03-01", periods=420)
    returns = RNG.normal(0.0005, 0.01, len(days))
    annual, monthly = ts.period_returns(returns, [d.date() for d in days])
    series = pd.Series(returns, index=days)
    expected_years = empyrical.aggregate_returns(series, "yearly")
    assert [p.year for p in annual] == list(expected_years.index)
    assert [p.ret for p in annual] == pytest.approx(list(expected_years.values), rel=REL)
    expected_months = empyrical.aggregate_returns(series, "monthly")
    assert [(p.year, p.month) for p in monthly] == list(expected_months.index)
    assert [p.ret for p in monthly] == pytest.approx(list(expected_months.values), rel=REL)


def _pyfolio_top_drawdowns(returns: pd.Series, top: int) -> list[tuple]:
    """pyfolio's get_top_drawdowns and gen_drawdown_table, transcribed (pyfolio is not
    a dependency): peak, valley, recovery, net drawdown and business-day duration."""
    cum = empyrical.cum_returns(returns, 1.0)
    underwater = cum / np.maximum.accumulate(cum) - 1
    out = []
    for _ in range(top):
        valley = underwater.idxmin()
        peak = underwater[:valley][underwater[:valley] == 0].index[-1]
        after = underwater[valley:][underwater[valley:] == 0]
        recovery = after.index[0] if len(after) else None
        if recovery is not None:
            underwater = underwater.drop(underwater[peak:recovery].index[1:-1])
        else:
            underwater = underwater.loc[:peak]
        duration = None if recovery is None else len(pd.date_range(peak, recovery, freq="B"))
        out.append((peak.date(), valley.date(), None if recovery is None else recovery.date(),
                    (cum[valley] - cum[peak]) / cum[peak], duration))
        if len(underwater) == 0 or np.min(underwater) == 0:
            break
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_drawdown_periods_are_pyfolios(seed: int) -> None:
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2024-01-01", periods=300)
    returns = pd.Series(rng.normal(0.0003, 0.012, len(days)), index=days)
    expected = _pyfolio_top_drawdowns(returns, 5)
    wealth = np.cumprod(1 + returns.to_numpy())
    got = ts.drawdown_periods(wealth, [d.date() for d in days], top=5)
    assert len(got) == len(expected) >= 3
    for period, (peak, valley, recovery, depth, duration) in zip(got, expected, strict=True):
        assert (period.peak, period.valley, period.recovery) == (peak, valley, recovery)
        assert period.depth == pytest.approx(depth, rel=REL)
        assert period.duration_days == duration


def test_drawdown_periods_by_hand() -> None:
    # Wealth 1 → 1.1, 0.99 (−10%), 1.1 (recovered), 1.2, 1.14 (−5%), 1.2, 1.08 (open −10%).
    wealth = np.array([1.0, 1.1, 0.99, 1.1, 1.2, 1.14, 1.2, 1.08])
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(8)]  # Mon 1 Jan on
    got = ts.drawdown_periods(wealth, days, top=5)
    assert [(p.peak.day, p.valley.day, p.recovery and p.recovery.day) for p in got] == [
        (2, 3, 4), (7, 8, None), (5, 6, 7)]
    assert [p.depth for p in got] == pytest.approx([-0.1, -0.1, -0.05])
    # Business days, both ends included: Tue-Thu is 3; Fri 5 to Sun 7 January is 1.
    assert [p.duration_days for p in got] == [3, None, 1]
    assert [p.days_underwater for p in got] == [1, 1, 1]
    assert ts.drawdown_periods(np.array([1.0, 1.1, 1.2]), days[:3]) == []


def _fills(rows: list[tuple[int, str, float, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"ts": [minute(i) for i, *_ in rows], "symbol": [r[1] for r in rows],
         "qty": [float(r[2]) for r in rows], "price": [r[3] for r in rows],
         "notional": [r[2] * r[3] for r in rows], "cost": [r[4] for r in rows]},
        schema_overrides={"ts": pl.Datetime("us", "UTC")})


def test_round_trips_by_hand() -> None:
    fills = _fills([
        (0, "A", 10, 100.0, 1.0), (1, "A", 10, 110.0, 1.0), (2, "A", -20, 120.0, 2.0),  # long
        (3, "A", -5, 120.0, 1.0), (4, "A", 10, 100.0, 2.0),  # short 5, flipped to long 5
        (2, "B", -4, 50.0, 0.5), (5, "B", 4.000000000001, 40.0, 0.5),  # short, ends flat
    ]).with_row_index("_order").sort("symbol", "_order")
    marks = pl.DataFrame({"symbol": ["A", "B"], "mark": [105.0, 40.0]})
    got = trips.round_trips(fills, marks)
    rows = got.select("symbol", "direction", "closed", "n_fills", "pnl", "cost").rows()
    assert rows == [
        ("A", "long", minute(2), 3, pytest.approx(2400 - 2100), pytest.approx(4.0)),
        ("B", "short", minute(5), 2, pytest.approx(40.0, rel=1e-9), pytest.approx(1.0)),
        ("A", "short", minute(4), 2, pytest.approx(5 * 20.0), pytest.approx(1.0 + 1.0)),
        ("A", "long", None, 1, pytest.approx(5 * 5.0), pytest.approx(1.0)),  # open, marked
    ]
    first = got.row(0, named=True)
    assert first["entry_price"] == pytest.approx(105.0) and first["exit_price"] == 120.0
    assert first["max_qty"] == 20 and first["net_pnl"] == pytest.approx(296.0)
    assert first["ret"] == pytest.approx(296.0 / 2100)
    summary = trips.summarize(got)
    assert (summary.n, summary.n_closed, summary.n_long, summary.n_short) == (4, 3, 2, 2)
    assert summary.win_rate == 1.0 and summary.profit_factor is None
    # The trips' net P&L is the symbols' net P&L (attribution), costs included.
    per_symbol = trips.attribution(fills, marks)
    assert summary.net_pnl == pytest.approx(float(per_symbol["net_pnl"].sum()), rel=1e-12)


def _run(costs: Costs, weights: list[tuple[int, str, float]]):  # type: ignore[no-untyped-def]
    bars = make_bars({"A": [(10, 11), (11, 12), (12, 11), (11, 13), (13, 12), (12, 12.5)],
                      "B": [(5, 5), (5, 6), (6, 6), (6, 5), (5, 5.5), (5.5, 5)]})
    result = run_vectorized(bars, make_weights(weights), capital=1e5, costs=costs)
    return bars, result


@pytest.mark.parametrize("costs", [
    Costs(), Costs(commission_bps=3, slippage_bps=2, spread_bps=4, commission_per_share=0.01),
    Costs(spread_model="range", commission_bps=1, borrow_bps=2000),
])
def test_attribution_sums_to_the_runs_pnl_and_costs_split_by_kind(costs: Costs) -> None:
    bars, result = _run(costs, [(0, "A", 0.6), (0, "B", -0.4), (2, "A", -0.3), (3, "B", 0.5),
                                (4, "A", 0.0)])
    fills = result.trades()
    got = trips.account(result, fills, costs=costs, bars=bars, positions=result.positions())
    attributed = sum(a.net_pnl for a in got.attribution)
    assert got.borrow is not None
    assert attributed - got.borrow == pytest.approx(result.final_equity - 1e5, rel=1e-9, abs=1e-6)
    c = got.costs
    assert c.trade_costs == pytest.approx(result.total_cost, rel=1e-12)
    kinds = [c.commission, c.slippage, c.spread, c.impact]
    assert all(k is not None for k in kinds)
    assert sum(k for k in kinds if k is not None) == pytest.approx(c.trade_costs, rel=1e-12)
    assert c.impact == 0.0  # no impact model: rates explain every cost
    traded = float(fills["notional"].abs().sum())
    if costs.spread_model == "fixed":
        assert c.spread == pytest.approx(costs.spread_bps / 2e4 * traded, rel=1e-12)
    assert c.slippage == pytest.approx(costs.slippage_bps / 1e4 * traded, rel=1e-12)
    if costs.borrow_bps == 0:
        assert c.borrow == 0.0
    else:
        assert c.borrow is not None and c.borrow > 0
    # The round trips' P&L adds up to the same total.
    assert got.summary.net_pnl == pytest.approx(attributed, rel=1e-9, abs=1e-6)


def test_borrow_from_the_identity_is_the_engines_charge() -> None:
    # Constant prices, short 0.5 from bar 1: each open-to-open hour pays b·0.5 of equity.
    n = 8
    bars = make_bars({"A": [(10.0, 10.0)] * n})
    costs = Costs(borrow_bps=5e4)  # 500% a year: large enough to see
    result = run_vectorized(bars, make_weights([(0, "A", -0.5)]), capital=1e5, costs=costs)
    got = trips.account(result, result.trades(), costs=costs, bars=bars)
    b = 5.0 * 60 / (365 * 86_400)  # one minute at 500% a year
    # P shrinks by (1 − b/2) each minute from bar 1 to the last open (n − 2 minutes).
    expected = 1e5 * (1 - (1 - 0.5 * b) ** (n - 2))
    assert got.borrow == pytest.approx(expected, rel=1e-6)
    assert got.costs.borrow == got.borrow


def test_extremes_keep_every_buckets_min_and_max() -> None:
    values = np.cumsum(RNG.normal(0, 1, 50_001))
    keep = extremes(values, 400)
    assert len(keep) <= 400 and keep[0] == 0 and keep[-1] == len(values) - 1
    assert np.all(np.diff(keep) > 0)
    edges = np.linspace(0, len(values), (400 - 2) // 2 + 1).astype(int)
    for lo, hi in itertools.pairwise(edges):
        part = values[keep[(keep >= lo) & (keep < hi)]]
        assert part.min() == values[lo:hi].min() and part.max() == values[lo:hi].max()
    assert list(extremes(values[:10], 400)) == list(range(10))


def session_bars(symbols: list[str], days: int, *, seed: int = 3) -> pl.DataFrame:
    """Minute bars of ``days`` weekdays × 390 minutes from 14:30 UTC, random walks."""
    rng = np.random.default_rng(seed)
    dates = [d for d in (dt.date(2024, 1, 2) + dt.timedelta(k) for k in range(2 * days))
             if d.weekday() < 5][:days]
    start = [int(dt.datetime.combine(d, dt.time(14, 30), dt.UTC).timestamp()) for d in dates]
    ts = (np.repeat(start, 390) + np.tile(np.arange(390) * 60, days)) * 1_000_000
    frames = []
    for i, symbol in enumerate(symbols):
        close = 50 * (1 + i) * np.exp(np.cumsum(rng.normal(0, 0.0008, len(ts))))
        open_ = np.concatenate(([close[0]], close[:-1]))
        frames.append(pl.DataFrame({
            "ts": ts, "symbol": symbol, "open": open_, "high": np.maximum(open_, close) * 1.0002,
            "low": np.minimum(open_, close) * 0.9998, "close": close, "volume": 1000}))
    return pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


PAYLOAD = "<script>alert('x')</script>"


def test_the_demo_sized_report_is_under_1_5_mb_with_exact_drawdown(tmp_path: Path) -> None:
    symbols = [f"S{i:02d}" for i in range(10)]
    bars = session_bars(symbols, 124)  # the demo job: 10 symbols × 6 months of minutes
    fast = pl.col("close").rolling_mean(30).over("symbol")
    slow = pl.col("close").rolling_mean(120).over("symbol")
    weights = validate_weights(bars.select(
        "ts", "symbol", weight=pl.when(fast > slow).then(0.1).otherwise(-0.05).fill_null(0.0)),
        bars, symbols)
    costs = Costs(commission_bps=1, spread_bps=2, borrow_bps=50)
    result = run_vectorized(bars, weights, capital=1e6, costs=costs)
    spec = BacktestSpec(dataset="demo", universe=symbols, start=dt.date(2024, 1, 2),
                        end=dt.date(2024, 6, 28), costs=costs, benchmark="S03",
                        params={"fast": 30, "note": PAYLOAD})
    metrics = metrics_for_spec(result, bars, spec)
    manifest = {"entrypoint": f"sma{PAYLOAD}.py", "spec": spec.model_dump(mode="json")}
    paths = write_report(tmp_path, result=result, metrics=metrics, manifest=manifest, bars=bars,
                         benchmark="S03", asked=(spec.start, spec.end))
    size = paths.report_html.stat().st_size
    print(f"report.html: {size:,} bytes for {bars.height:,} bars")
    assert size < 1_500_000
    page = paths.report_html.read_text()
    # The header: strategy, parameters (escaped), universe, period, benchmark, costs.
    header = page.split('id="header">')[1].split("</table>")[0]
    assert PAYLOAD not in page and "sma&lt;script&gt;" in header
    assert "&quot;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;" in header
    assert "10 symbols: S00, S01" in header and "asked 2024-01-02 to 2024-06-28" in header
    assert "S03" in header and "commission 1 bps" in header and "borrow 50 bps/yr" in header
    # A spec not submitted through a deployment: no default recorded beside its preset.
    assert "frictionless (no deployment default recorded with the run)" in header
    assert "no volume cap, fractional shares, every drift rebalanced" in header
    # Each trace keeps at most MAX_POINTS points, and the drawdown's trough exactly.
    data = chart_data(result, None)
    assert all(len(c.y) <= MAX_POINTS for c in data.curves.values())
    assert min(data.drawdown) == metrics.max_drawdown
    sheet = TearSheet.model_validate(json.loads(paths.tearsheet_json.read_text()))
    assert sheet.relative is not None and sheet.relative.beta == metrics.beta
    assert sheet.relative.alpha == metrics.alpha
    assert len(sheet.round_trips) == min(sheet.n_round_trips, 500) and sheet.n_round_trips > 500
    attributed = sum(a.net_pnl for a in sheet.attribution)
    assert sheet.costs.borrow is not None
    assert attributed - sheet.costs.borrow == pytest.approx(sheet.net_pnl, rel=1e-9)
    assert sheet.header.params == {"fast": 30, "note": PAYLOAD}  # data, escaped only in HTML
    days = trading_days(result)
    assert len(days) == 124 and sheet.header.n_days == 124
    assert sheet.benchmark is not None and sheet.benchmark.total_return == pytest.approx(
        float(np.prod(1 + benchmark_returns(bars, "S03", days)) - 1), rel=1e-12)


def test_tearsheet_without_fills_or_bars_is_still_whole() -> None:
    _bars, result = _run(Costs(), [(0, "A", 1.0)])
    metrics = compute_metrics(result)
    sheet = ts.build_tearsheet(result, manifest={})
    assert sheet.benchmark is None and sheet.relative is None
    assert sheet.returns.total_return == pytest.approx(metrics.total_return, rel=1e-12)
    assert sheet.header.benchmark == "none" and sheet.costs.trade_costs == 0.0
    json.dumps(sheet.model_dump(mode="json"), allow_nan=False)


def test_cost_kinds_the_engine_charged_are_taken_as_charged() -> None:
    # Event runs' fills carry commission and slippage: no rates are needed.
    fills = _fills([(0, "A", 10, 100.0, 3.0), (1, "A", -10, 101.0, 2.5)]).with_columns(
        commission=pl.Series([1.0, 1.0]), slippage=pl.Series([2.0, 1.5]))
    got = trips.cost_breakdown(fills, None, None, borrow=0.0)
    assert (got.commission, got.slippage, got.spread, got.impact) == (2.0, 3.5, 0.0, 0.0)
    assert got.source["commission"] == "engine" and got.trade_costs == 5.5
    # Without the kinds and without the spec's rates, only the total is known.
    bare = trips.cost_breakdown(fills.drop("commission", "slippage"), None, None, borrow=None)
    assert bare.commission is None and bare.impact is None and bare.trade_costs == 5.5


def test_attribution_over_100_symbols_keeps_the_ends_and_sums_the_rest() -> None:
    n = 130
    frame = pl.DataFrame({
        "symbol": [f"S{i:03d}" for i in range(n)], "pnl": np.arange(n, 0, -1, dtype=float),
        "cost": np.ones(n), "net_pnl": np.arange(n, 0, -1, dtype=float) - 1.0,
        "traded_notional": np.full(n, 10.0), "n_fills": np.full(n, 2)})
    rows, rest = trips._attribution_rows(frame)
    assert len(rows) == 100 and rest is not None and rest.symbol == "30 other symbols"
    assert rows[0].symbol == "S000" and rows[-1].symbol == f"S{n - 1:03d}"
    total = sum(r.net_pnl for r in rows) + rest.net_pnl
    assert total == pytest.approx(float(frame["net_pnl"].sum()))
    assert rest.n_fills == 60


def test_an_event_runs_fills_give_its_round_trips_attribution_and_costs() -> None:
    bars = make_bars({"A": [(10, 10), (10, 11), (11, 12), (12, 12), (12, 13)]})
    market = Market.from_bars(bars)
    broker = Broker(1, capital=1e4, costs=BrokerCosts(commission_bps=10),
                    max_participation=None)
    market_order = int(OrderType.MARKET)
    broker.submit([(1, 0, market_order, 100.0, math.nan, math.nan)], [])
    broker.execute(1, market.data[1])  # buys 100 at 10
    broker.submit([(2, 0, market_order, -100.0, math.nan, math.nan)], [])
    for t in range(2, len(market)):
        broker.execute(t, market.data[t])  # sells 100 at 11
    result = build_result(market, broker)
    sheet = ts.build_tearsheet(result, manifest={}, bars=bars, trades=result.trades())
    assert sheet.n_round_trips == 1 and sheet.round_trips[0].closed == minute(2)
    trip = sheet.round_trips[0]
    assert trip.pnl == pytest.approx(100.0) and trip.cost == pytest.approx(0.1 * 10 + 0.1 * 11)
    assert sheet.costs.commission == pytest.approx(2.1) and sheet.costs.source["commission"] \
        == "engine"
    assert sheet.attribution[0].net_pnl == pytest.approx(sheet.net_pnl, rel=1e-12)
    assert sheet.costs.borrow == 0.0


def test_the_header_states_a_presets_fill_model_and_the_deployments_default() -> None:
    spec = resolve_costs_preset(BacktestSpec(
        dataset="d", universe=["A"], start=dt.date(2024, 1, 2), end=dt.date(2024, 1, 3),
        costs_preset="institutional"), "retail")
    # The header reads the preset and the default the submission recorded in the spec.
    built = ts.header(_small_run(),
                      {"spec": spec.model_dump(mode="json")}, "A", 1)
    assert (built.costs_preset, built.default_costs_preset) == ("institutional", "retail")
    # The header section reads only the sheet's header.
    sheet = TearSheet.model_construct(header=built)
    header = header_section(sheet, spec.costs, spec.execution)
    assert "institutional (asked for; the deployment&#x27;s default was retail)" in header
    assert "at most 5% of a bar&#x27;s volume, the rest carried" in header
    assert "lots of 1 shares" in header and "no trade under 1000" in header
    assert "drift under 0.005 of equity not traded" in header


def test_the_header_says_when_the_preset_is_the_deployments_default_or_unrecorded() -> None:
    defaulted = resolve_costs_preset(BacktestSpec(
        dataset="d", universe=["A"], start=dt.date(2024, 1, 2), end=dt.date(2024, 1, 3)),
        "institutional")
    result = _small_run()
    sheet = TearSheet.model_construct(header=ts.header(
        result, {"spec": defaulted.model_dump(mode="json")}, "A", 1))
    assert "institutional (the deployment&#x27;s default)" in header_section(sheet, None)
    # A spec stored before the default was recorded (no key): its preset, said plainly.
    old = {k: v for k, v in defaulted.model_dump(mode="json").items()
           if k not in ("costs_preset", "default_costs_preset")}
    sheet = TearSheet.model_construct(header=ts.header(result, {"spec": old}, "A", 1))
    assert sheet.header.default_costs_preset is None
    shown = header_section(sheet, None)
    assert "frictionless (no deployment default recorded with the run)" in shown
    sheet = TearSheet.model_construct(header=ts.header(result, {}, "A", 1))
    assert "<th>Costs preset</th><td>not recorded</td>" in header_section(sheet, None)


def _small_run() -> EngineResult:
    bars = make_bars({"A": [(10.0, 10.0), (10.0, 11.0), (11.0, 11.0)]})
    return run_vectorized(bars, make_weights([(0, "A", 0.5)]), capital=1e5, costs=Costs())
