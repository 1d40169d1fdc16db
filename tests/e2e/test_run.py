"""The whole path of one backtest through a real gVisor sandbox: CLI → job → report."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from tests.e2e.cli_kit import SYMBOLS, pitwall, sample_data_dir

from pitwall.models import JobStatus
from pitwall_executor.config import load_config
from pitwall_executor.datalake.market_calendar import trading_minutes
from pitwall_executor.jobs.store import MetadataStore

ROOT = Path(__file__).resolve().parents[2]
SMA = ROOT / "examples" / "sma_crossover.py"
ARGS = ["--symbols", ",".join(SYMBOLS), "--start", "2024-03-04", "--end", "2024-03-15"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_data_dir(tmp_path_factory, end=dt.date(2024, 3, 29))


def job_rows(data_dir: Path) -> int:
    store = MetadataStore(load_config(data_dir=data_dir).database_url)
    return len(store.list_jobs(limit=10_000))


def run_json(data_dir: Path, strategy: Path, *extra: str) -> dict[str, object]:
    res = pitwall(data_dir, "run", str(strategy), *ARGS, "--json", *extra)
    view: dict[str, object] = json.loads(res.output)
    return view


def artifacts(data_dir: Path, view: dict[str, object]) -> Path:
    return data_dir / "artifacts" / str(view["id"]) / f"attempt-{view['attempt']}"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "strategy.py"
    path.write_text("import polars as pl\nimport pitwall\n\n" + body)
    return path


def test_sma_crossover_completes_with_a_report_and_reruns_identically(data_dir: Path) -> None:
    first = run_json(data_dir, SMA, "--param", "fast=5", "--param", "slow=60")
    assert first["status"] == "COMPLETED", first["reason"]
    out = artifacts(data_dir, first)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sharpe"] == pytest.approx(first["metrics"]["sharpe"])  # type: ignore[index]
    equity = pl.read_parquet(out / "equity.parquet")
    assert equity.height == trading_minutes(dt.date(2024, 3, 4), dt.date(2024, 3, 15))  # ARGS
    html = (out / "report.html").read_text()
    assert "Plotly.newPlot" in html and str(first["bundle_sha256"]) in html
    assert "sample@v1" in html or '"version": 1' in html or "v1" in html

    second = run_json(data_dir, SMA, "--param", "fast=5", "--param", "slow=60")
    # Identical results; only the audit's cuts are drawn anew (a secret seed per run).
    one, two = dict(first["metrics"]), dict(second["metrics"])  # type: ignore[call-overload]
    assert one.pop("lookahead")["status"] == two.pop("lookahead")["status"]
    assert second["id"] != first["id"] and one == two
    assert (artifacts(data_dir, second) / "equity.parquet").read_bytes() == \
        (out / "equity.parquet").read_bytes()
    other = run_json(data_dir, SMA, "--param", "fast=10", "--param", "slow=120")
    assert other["metrics"] != first["metrics"]


def test_cli_prints_a_metrics_table_and_the_report_path(data_dir: Path) -> None:
    res = pitwall(data_dir, "run", str(SMA), *ARGS, "--param", "fast=5", "--param", "slow=60",
                  "--costs-preset", "frictionless", "--commission-bps", "2")
    assert res.exit_code == 0, res.output
    assert "COMPLETED" in res.output and "Sharpe" in res.output and "Max drawdown" in res.output
    assert "\nperiod: 2024-03-04 to 2024-03-15, 10 trading days\n" in res.output
    assert ("\ncosts preset: frictionless (asked for; the deployment's default was retail)\n"
            in res.output)
    report = Path(res.output.strip().splitlines()[-1].removeprefix("report: "))
    assert report.name == "report.html" and report.is_file()
    spec = json.loads((report.parent / "manifest.json").read_text())["spec"]
    assert spec["costs_preset"] == "frictionless" and spec["execution"]["lot_size"] is None
    assert spec["costs"]["commission_bps"] == 2 and spec["costs"]["spread_bps"] == 0


def test_a_range_reaching_past_the_data_runs_on_what_exists_and_says_so(
    data_dir: Path
) -> None:
    res = pitwall(data_dir, "run", str(SMA), "--symbols", "AAPL", "--start", "2023-01-02",
                  "--end", "2024-03-08", "--no-audit", "--spread-bps", "2", "--spread-model",
                  "range", "--commission-per-share", "0.001", "--borrow-bps", "50")
    assert res.exit_code == 0, res.output
    out_dir = Path(res.output.strip().splitlines()[-1].removeprefix("report: ")).parent
    spec = json.loads((out_dir / "manifest.json").read_text())["spec"]
    costs = spec["costs"]
    assert (costs["spread_bps"], costs["spread_model"], costs["commission_per_share"],
            costs["borrow_bps"]) == (2, "range", 0.001, 50)  # every cost reaches the run
    # No preset named: the deployment's default gives what the options leave unset.
    assert (spec["costs_preset"], spec["default_costs_preset"]) == ("retail", "retail")
    assert costs["impact_coefficient"] == 1 and costs["commission_bps"] == 0
    assert spec["execution"]["participation"] == 0.1 and spec["execution"]["lot_size"] == 1
    assert "\ncosts preset: retail (the deployment's default)\n" in res.output
    assert ("warning: period 2024-03-01 to 2024-03-08, 6 trading days; asked 2023-01-02 to "
            "2024-03-08: the data has no bars of these symbols outside this period") in res.output
    report = Path(res.output.strip().splitlines()[-1].removeprefix("report: ")).read_text()
    assert '<div class="banner warn" id="period">' in report


def test_a_strategy_that_raises_fails_with_its_error(data_dir: Path, tmp_path: Path) -> None:
    strategy = write(tmp_path, "@pitwall.vectorized\ndef s(bars):\n"
                               "    raise ZeroDivisionError('fast window is zero')\n")
    view = run_json(data_dir, strategy)
    assert view["status"] == "FAILED"
    assert "ZeroDivisionError: fast window is zero" in str(view["reason"])
    log = (artifacts(data_dir, view) / "log.txt").read_text()
    assert "Traceback" in log and "strategy.py" in log
    res = pitwall(data_dir, "run", str(strategy), *ARGS)
    assert res.exit_code == 1


def test_a_strategy_past_its_timeout_is_killed(data_dir: Path, tmp_path: Path) -> None:
    strategy = write(tmp_path, "import time\n@pitwall.vectorized\ndef s(bars):\n"
                               "    time.sleep(120)\n    return bars\n")
    view = run_json(data_dir, strategy, "--timeout", "3")
    assert view["status"] == "TIMED_OUT"
    assert "limit of 3 s" in str(view["reason"])
    started = dt.datetime.fromisoformat(str(view["started_at"]))
    finished = dt.datetime.fromisoformat(str(view["finished_at"]))
    assert (finished - started).total_seconds() < 3 + 10


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(srv.accept())
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join()
    srv.close()


def test_a_strategy_cannot_reach_the_host_or_write_outside_scratch(
    data_dir: Path, tmp_path: Path, listener: tuple[int, list[object]]
) -> None:
    port, accepted = listener
    strategy = write(tmp_path, f"""import socket, sys
@pitwall.vectorized
def s(bars):
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=2)
        print("NET: connected", file=sys.stderr)
    except OSError as exc:
        print("NET: blocked", type(exc).__name__, file=sys.stderr)
    for path in ("/escape.txt", "/tmp/escape.txt", "/job/bundle/x.py", "/usr/x"):
        try:
            open(path, "w").write("x")
            print("WRITE: wrote", path, file=sys.stderr)
        except OSError as exc:
            print("WRITE: denied", path, type(exc).__name__, file=sys.stderr)
    open("/scratch/ok.txt", "w").write("fine")
    print("SCRATCH: ok", file=sys.stderr)
    return bars.select("ts", "symbol", weight=pl.lit(0.0))
""")
    view = run_json(data_dir, strategy)
    assert view["status"] == "COMPLETED", view["reason"]
    log = (artifacts(data_dir, view) / "log.txt").read_text()
    assert "NET: blocked" in log and "NET: connected" not in log
    assert accepted == []
    # The full run, then the lookahead audit's re-runs (a sandbox of their own, whose
    # output follows in the log): every one denied.
    runs = log.count("SCRATCH: ok")
    assert runs >= 2 and "--- lookahead audit" in log
    assert log.count("WRITE: denied") >= 4 * runs - 4 and "WRITE: wrote" not in log
    assert not Path("/escape.txt").exists()


def test_unknown_symbol_and_empty_range_are_refused_before_anything_runs(
    data_dir: Path, tmp_path: Path
) -> None:
    before = job_rows(data_dir)
    res = pitwall(data_dir, "run", str(SMA), "--symbols", "AAPL,APPL", "--start", "2024-03-04",
                  "--end", "2024-03-08")
    assert res.exit_code != 0
    assert "APPL" in res.output and "did you mean 'AAPL'" in res.output
    res = pitwall(data_dir, "run", str(SMA), "--symbols", "AAPL", "--start", "2024-03-09",
                  "--end", "2024-03-10")
    assert res.exit_code != 0 and "2024-03-01" in res.output
    res = pitwall(data_dir, "run", str(SMA), "--symbols", "AAPL", "--start", "2024-03-08",
                  "--end", "2024-03-04")
    assert res.exit_code != 0 and "before start" in res.output
    assert job_rows(data_dir) == before


def test_invalid_weights_fail_the_job_naming_the_row(data_dir: Path, tmp_path: Path) -> None:
    strategy = write(tmp_path, "@pitwall.vectorized\ndef s(bars):\n    return bars.select("
                               "'ts', 'symbol', weight=pl.lit(float('nan')))\n")
    view = run_json(data_dir, strategy)
    assert view["status"] == "FAILED"
    assert "row 0" in str(view["reason"]) and "NaN" in str(view["reason"])
    assert view["metrics"] is None


def test_job_statuses_are_recorded(data_dir: Path) -> None:
    store = MetadataStore(load_config(data_dir=data_dir).database_url)
    statuses = {v.status for v in store.list_jobs(limit=100)}
    assert JobStatus.PENDING not in statuses and JobStatus.RUNNING not in statuses


def test_cli_shows_the_metrics_before_the_audits_verdict(data_dir: Path) -> None:
    # Metrics first (docs/architecture.md §2): the table is printed (stderr) as soon as the
    # metrics are committed, while the audit still runs; the final view follows on stdout.
    res = pitwall(data_dir, "run", str(SMA), *ARGS, "--param", "fast=5", "--param", "slow=60")
    assert res.exit_code == 0, res.output
    early = res.stderr.index("metrics ready after ")
    assert "the lookahead audit is still running" in res.stderr[early:]
    assert res.output.index("metrics ready after ") < res.output.index(": COMPLETED")
    table = [line for line in res.stderr[early:].splitlines() if line.startswith("  ")]
    final = [line for line in res.stdout.splitlines() if line.startswith("  ")]
    assert any(line.strip().startswith("Sharpe") for line in table)
    assert table == final[: len(table)]  # the same figures, before the verdict line
    assert "no lookahead found" in res.stdout and "no lookahead found" not in res.stderr
