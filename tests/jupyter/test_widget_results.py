"""The %%backtest panel's final state, from a job view and its log: a failure in place of
the chart (traceback named by cell), a flagged run not shown as a success, links through
Jupyter. The client is a stub at the edge: these are the panel's rendering rules; the
live run is tests/jupyter/test_magic_kernel.py."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from pitwall.models import BacktestSpec, JobStatus, JobView, LookaheadAudit, Metrics
from pitwall.notebook.magic import dependency_bundle
from pitwall.notebook.widget import BacktestPanel

LOG = """/usr/lib/python3/site-packages/polars/_utils.py:12: DeprecationWarning: old API
  warnings.warn(
Traceback (most recent call last):
  File "/usr/lib/python3.11/site-packages/pitwall/sandbox/runner.py", line 123, in main
    payload = run_job(job)
              ^^^^^^^^^^^^
  File "/job/bundle/strategy.py", line {line}, in strat
    raise ValueError("window must be > 0")
ValueError: window must be > 0
"""


class StubClient:
    def __init__(self, log: str) -> None:
        self.log = log

    def logs(self, job_id: str) -> str:
        return self.log

    def report_url(self, job_id: str) -> str:
        return f"http://127.0.0.1:9/v1/artifacts/{job_id}/report.html?sig=x"

    def equity(self, job_id: str) -> Any:
        import polars as pl

        return pl.DataFrame({"ts": [dt.datetime(2024, 3, 4, 14, 30)], "equity": [1.0]})


def view(status: JobStatus, metrics: Metrics | None = None, reason: str | None = None) -> JobView:
    spec = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 8))
    return JobView(id="job-1", status=status, spec=spec, researcher="r", attempt=1,
                   created_at=dt.datetime(2024, 3, 4, tzinfo=dt.UTC), bundle_sha256="0" * 64,
                   metrics=metrics, reason=reason)


def test_a_failure_replaces_the_chart_and_names_the_cell(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PITWALL_BASE_URL", "/user/alice/")
    cell = "\n@pitwall.vectorized\ndef strat(bars):\n    raise ValueError('window must be > 0')\n"
    source, spans = dependency_bundle(cell, [(3, "import pitwall")])
    line = source.splitlines().index("    raise ValueError('window must be > 0')") + 1
    panel = BacktestPanel(StubClient(LOG.format(line=line)), "job-1",  # type: ignore[arg-type]
                          cells=spans)
    panel.update(view(JobStatus.FAILED, reason="the strategy raised ValueError"))
    panel.finish(view(JobStatus.FAILED, reason="the strategy raised ValueError"))
    assert panel.figure not in panel.box.children  # no empty chart
    assert panel.progress.bar_style == "danger" and panel.progress.description == "failed"
    shown = panel.log.value
    assert "ValueError: window must be &gt; 0" in shown and "<b>this cell</b>" in shown
    assert "This cell, line 4, in strat" in shown and "DeprecationWarning" not in shown
    assert "2 line(s) before the traceback left out" in shown
    assert "href='/user/alice/pitwall/artifacts/job-1/log.txt'" in shown


def test_a_flagged_run_is_not_a_plain_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PITWALL_BASE_URL", "/")
    audit = LookaheadAudit(status="flagged", tolerance=1e-12, statement="lookahead: flagged")
    metrics = Metrics(lookahead=audit, total_return=5.0, cagr=1.7e18, annual_volatility=0.2,
                      sharpe=75.0, sortino=80.0, max_drawdown=0.01, turnover=10_000.0,
                      exposure=1.0, n_days=5, n_bars=1950, final_equity=6e6,
                      profit_factor=1.7976931348623157e308)
    panel = BacktestPanel(StubClient(""), "job-1")  # type: ignore[arg-type]
    done = view(JobStatus.COMPLETED, metrics)
    panel.update(done)
    panel.finish(done)
    assert "data-audit='flagged'" in panel.status.value and "lookahead flagged" in \
        panel.status.value
    assert panel.progress.bar_style == "danger"
    assert "&gt;1e6 %" in panel.metrics.value and "179769" not in panel.metrics.value
    assert "no costs" in panel.warning.value
    assert "href='/pitwall/report/job-1'" in panel.report.value
    assert "data-pitwall-open='report'" in panel.report.value


def test_the_magic_takes_every_cost_and_refuses_a_bad_one() -> None:
    from pitwall.notebook.magic import parse_spec

    base = "--symbols AAPL --start 2024-03-04 --end 2024-03-08"
    spec = parse_spec(f"{base} --commission-bps 1 --commission-per-share 0.005 "
                      "--spread-bps 2 --spread-model range --slippage-bps 3 --borrow-bps 50 "
                      "--impact-coefficient 0.5")
    assert spec.costs.model_dump() == {
        "commission_bps": 1.0, "commission_per_share": 0.005, "spread_bps": 2.0,
        "spread_model": "range", "slippage_bps": 3.0, "borrow_bps": 50.0,
        "impact_coefficient": 0.5}
    assert parse_spec(base).costs.model_dump() == spec.costs.__class__().model_dump()
    with pytest.raises(ValueError, match="--slippage-bps: Input should be greater"):
        parse_spec(f"{base} --slippage-bps -1")


def test_the_magic_sends_only_the_costs_given_and_a_preset_when_named() -> None:
    from pitwall.notebook.magic import parse_spec

    base = "--symbols AAPL --start 2024-03-04 --end 2024-03-08"
    # No preset and no cost named: the deployment's default preset gives them all.
    sent = json.loads(parse_spec(base).submission_json())
    assert "costs_preset" not in sent and sent["costs"] == {}
    sent = json.loads(parse_spec(f"{base} --spread-bps 0").submission_json())
    assert "costs_preset" not in sent and sent["costs"] == {"spread_bps": 0.0}
    named = parse_spec(f"{base} --costs-preset institutional --commission-bps 3")
    assert json.loads(named.submission_json())["costs_preset"] == "institutional"
    assert named.costs.commission_bps == 3.0 and named.costs.spread_bps == 2.0
    assert named.execution.participation == 0.05
    with pytest.raises(ValueError, match="--costs-preset"):
        parse_spec(f"{base} --costs-preset cheap")
