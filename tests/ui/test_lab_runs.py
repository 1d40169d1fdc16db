"""The Backtests panel as a run browser, in a real lab and browser: two runs compared side
by side, a sweep's heatmap and results table, and a chart that stays in view (and resizes)
under a long job list.

Runs are submitted the way ``pitwall run`` does beside a lab: to the embedded stack that
owns the lab's data dir (docs/architecture.md §7), so they show in its panel. Each is the
SMA example on one symbol over a week, audit off, so the session's one worker is quick.
Screenshots go to test-artifacts/ui/.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from typing import Any

from tests.ui.conftest import ARTIFACTS, ROOT, Lab
from tests.ui.test_lab import status
from tests.ui.test_lab_results import row

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec
from pitwall_executor.orchestration.ownership import ServerInfo, running_server
from pitwall_executor.orchestration.server_client import submit

SMA = ROOT / "examples" / "sma_crossover.py"
GRID = {"fast": [5, 10], "slow": [30, 60]}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
CHART = ".pitwall-equity"
# The chart's traces and what it shows ("final", "compare", "sweep"), once drawn.
PLOTTED_JS = """(kind) => {
  const c = document.querySelector('.pitwall-equity');
  return c && c.dataset.plot === kind && c.data ? c.data.length : false;
}"""


def stack(lab: Lab) -> ServerInfo:
    server = running_server(lab.data_dir)
    assert server is not None, "the lab runs no embedded stack"
    return server


def spec(**params: int) -> BacktestSpec:
    return BacktestSpec(dataset="sample", universe=["AAPL"], start="2024-03-04",
                        end="2024-03-08", params=params, audit=False)


def bundle() -> bytes:
    return build_bundle({"sma_crossover.py": SMA.read_bytes()}, entrypoint="sma_crossover.py")


def job(lab: Lab, job_id: str) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(lab.api(f"v1/backtests/{job_id}"))
    return view


def wait_done(lab: Lab, job_id: str, timeout: float = 420) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (view := job(lab, job_id))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"{job_id} still {view['status']} after {timeout} s"
        time.sleep(1)
    assert view["status"] == "COMPLETED", view["reason"]
    return view


def cancel(lab: Lab, job_id: str) -> None:
    req = urllib.request.Request(f"{lab.url}/pitwall/api/v1/backtests/{job_id}/cancel",
                                 method="POST", data=b"",
                                 headers={"Authorization": f"token {lab.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status < 300


def open_panel(page: Any, lab: Lab, workspace: str) -> None:
    page.goto(f"{lab.url}/lab/workspaces/{workspace}?reset&token={lab.token}")
    page.locator(".jp-SideBar .lm-TabBar-tab[data-id='pitwall-backtests']").click()
    page.locator(".pitwall-job").first.wait_for()


def plotted(page: Any, kind: str) -> int:
    traces: int = page.wait_for_function(PLOTTED_JS, arg=kind, timeout=60_000).json_value()
    return traces


def test_two_runs_compared_side_by_side(page: Any, lab: Lab) -> None:
    server = stack(lab)
    a = submit(server, spec(fast=5, slow=30), bundle())
    b = submit(server, spec(fast=10, slow=60), bundle())
    ja, jb = wait_done(lab, a), wait_done(lab, b)
    sharpe_a, sharpe_b = ja["metrics"]["sharpe"], jb["metrics"]["sharpe"]
    assert sharpe_a != sharpe_b  # else the comparison could not tell A from B
    open_panel(page, lab, "runs-compare")
    page.wait_for_selector(status(b, "COMPLETED"))
    page.locator(f"{row(a)} .pitwall-compare-pick").click()
    assert page.locator(f"{row(a)} .pitwall-compare-tag").inner_text() == "A"
    page.locator(f"{row(b)} .pitwall-compare-pick").click()
    assert page.locator(f"{row(b)} .pitwall-compare-tag").inner_text() == "B"

    table = page.locator(".pitwall-detail .pitwall-compare-table")
    sharpe = table.locator("tr[data-metric='sharpe']")
    assert sharpe.locator("td[data-run='a']").inner_text() == f"{sharpe_a:.3f}"
    assert sharpe.locator("td[data-run='b']").inner_text() == f"{sharpe_b:.3f}"
    assert sharpe.locator("td[data-run='diff']").inner_text() == f"{sharpe_b - sharpe_a:+.3f}"
    runs = page.locator(".pitwall-compare-runs").inner_text()
    assert f"{a[:8]} (fast=5 slow=30)" in runs and f"{b[:8]} (fast=10 slow=60)" in runs

    assert plotted(page, "compare") == 2
    names = page.evaluate(f"() => document.querySelector('{CHART}').data.map(t => t.name)")
    assert names == [f"A {a[:8]}", f"B {b[:8]}"]
    assert page.locator(f"{CHART} .scatterlayer .trace").count() == 2  # both drawn
    page.screenshot(path=str(ARTIFACTS / "runs-compare.png"))

    # Selecting one run leaves the comparison for that run's own detail.
    page.locator(f"{row(a)} .pitwall-id").click()
    page.wait_for_selector(f".pitwall-detail h4:text-is('{a}')")
    assert plotted(page, "final") == 1
    assert page.locator(".pitwall-compare-tag").count() == 0


def test_a_sweep_as_a_heatmap_and_a_table(page: Any, lab: Lab) -> None:
    # The whole month (20 trading days): enough for CSCV's 4 submatrices of 5 days.
    month = spec(fast=5, slow=30).model_copy(update={"start": dt.date(2024, 3, 1),
                                                     "end": dt.date(2024, 3, 29)})
    sweep_id = submit(stack(lab), month, bundle(), grid=GRID)
    wait_done(lab, sweep_id, timeout=600)
    results = json.loads(lab.api(f"v1/sweeps/{sweep_id}"))
    over = results["overfitting"]
    assert over["n_days"] == 20 and over["cscv_splits"] == 4 and over["pbo"] is not None
    rows = results["rows"]
    assert [r["params"] for r in rows] == [{"fast": 5, "slow": 30}, {"fast": 5, "slow": 60},
                                           {"fast": 10, "slow": 30}, {"fast": 10, "slow": 60}]
    assert len({r["metrics"]["sharpe"] for r in rows}) > 1
    open_panel(page, lab, "runs-sweep")
    page.locator(f"{row(sweep_id)} .pitwall-id").click()

    # The heatmap: Sharpe (the default) over fast × slow, each cell the API's value.
    assert plotted(page, "sweep") == 1
    controls = page.locator(".pitwall-sweep-controls")
    assert controls.locator(".pitwall-sweep-metric").input_value() == "sharpe"
    assert controls.locator(".pitwall-sweep-x").input_value() == "fast"
    assert controls.locator(".pitwall-sweep-y").input_value() == "slow"
    heat = page.evaluate(f"""() => {{
      const t = document.querySelector('{CHART}').data[0];
      return {{type: t.type, x: t.x, y: t.y, z: t.z}};
    }}""")
    assert heat["type"] == "heatmap" and heat["x"] == ["5", "10"] and heat["y"] == ["30", "60"]
    expected = [[None, None], [None, None]]
    for r in rows:
        expected[heat["y"].index(str(r["params"]["slow"]))][
            heat["x"].index(str(r["params"]["fast"]))] = r["metrics"]["sharpe"]
    assert heat["z"] == expected
    assert page.locator(f"{CHART} .heatmaplayer image").count() == 1  # Plotly drew it

    table = page.locator(".pitwall-detail .pitwall-sweep-table")
    lines = table.locator("tr.pitwall-sweep-row")
    assert lines.count() == 4
    for i, r in enumerate(rows):
        line = lines.nth(i)
        assert line.get_attribute("data-id") == r["job_id"]
        assert line.locator("td[data-param='fast']").inner_text() == str(r["params"]["fast"])
        assert line.locator("td[data-metric='sharpe']").inner_text() == \
            f"{r['metrics']['sharpe']:.3f}"
    # The overfitting block above the table shows the API's DSR, PBO and verdict.
    block = page.locator(".pitwall-detail .pitwall-overfit")
    assert block.get_attribute("data-overfit") == str(over["overfit"]).lower()
    assert block.locator("td[data-stat='pbo']").inner_text() == f"{over['pbo']:.3f}"
    assert block.locator("td[data-stat='dsr']").inner_text() == f"{over['dsr']:.3f}"
    assert block.locator("td[data-stat='oos_sharpe']").inner_text() == \
        f"{over['oos_sharpe']:.2f}"
    assert block.locator(".pitwall-overfit-verdict").inner_text() == over["verdict"]
    # Its walk-forward folds out, fold by fold: the parameters chosen on each training
    # window and their Sharpe on the next window, as the API computed them.
    folds = over["walk_forward"] or []
    assert folds  # the sweep's days allow a walk-forward
    block.locator(".pitwall-walk-forward summary").click()
    shown = block.locator("tr.pitwall-fold")
    assert shown.count() == len(folds)
    for i, fold in enumerate(folds):
        line = shown.nth(i)
        chosen = " ".join(f"{k}={json.dumps(v)}" for k, v in fold["params"].items())
        assert line.locator("td[data-fold='params']").inner_text() == chosen
        assert line.locator("td[data-fold='train']").inner_text() == f"{fold['train_sharpe']:.2f}"
        assert line.locator("td[data-fold='test']").inner_text() == f"{fold['test_sharpe']:.2f}"
    page.screenshot(path=str(ARTIFACTS / "runs-sweep.png"))

    # Another metric redraws the heatmap with its values.
    controls.locator(".pitwall-sweep-metric").select_option("max_drawdown")
    page.wait_for_function(f"""(want) => {{
      const t = document.querySelector('{CHART}').data[0];
      return JSON.stringify(t.z.flat().sort((p, q) => p - q)) === JSON.stringify(want);
    }}""", arg=sorted(r["metrics"]["max_drawdown"] for r in rows))
    # Swapping the axes transposes it (y takes the parameter x left).
    controls.locator(".pitwall-sweep-x").select_option("slow")
    page.wait_for_function(f"""() => {{
      const t = document.querySelector('{CHART}').data[0];
      return JSON.stringify([t.x, t.y]) === '[["30","60"],["5","10"]]';
    }}""")
    assert controls.locator(".pitwall-sweep-y").input_value() == "fast"

    # A row of the table selects that run: its own detail and equity curve.
    child = rows[1]["job_id"]
    lines.nth(1).locator("td").first.click()
    page.wait_for_selector(f".pitwall-detail h4:text-is('{child}')")
    assert page.locator(".pitwall-job.pitwall-selected").get_attribute("data-id") == child
    assert plotted(page, "final") == 1
    page.screenshot(path=str(ARTIFACTS / "runs-sweep-child.png"))

    # Back to the sweep (the axes as chosen), then a heatmap cell selects its run too: the
    # top-left cell is slow=30 (first x), fast=10 (last y, drawn at the top).
    page.locator(f".pitwall-detail button[data-id='{sweep_id}']").click()
    plotted(page, "sweep")
    assert controls.locator(".pitwall-sweep-x").input_value() == "slow"
    area = page.locator(f"{CHART} .nsewdrag").first.bounding_box()
    page.mouse.click(area["x"] + area["width"] / 4, area["y"] + area["height"] / 4)
    corner = next(r["job_id"] for r in rows if r["params"] == {"fast": 10, "slow": 30})
    page.wait_for_selector(f".pitwall-detail h4:text-is('{corner}')")
    assert page.locator(".pitwall-job.pitwall-selected").get_attribute("data-id") == corner


def test_the_chart_stays_in_view_under_a_long_list_and_resizes(page: Any, lab: Lab) -> None:
    server = stack(lab)
    listed = json.loads(lab.api("v1/backtests?limit=50"))["items"]
    if not any(j["status"] == "COMPLETED" and j["kind"] == "backtest" for j in listed):
        wait_done(lab, submit(server, spec(fast=5, slow=30), bundle()))
    # Runs cancelled at once fill the list cheaply: more than 12 rows, whatever ran before.
    for _ in range(max(0, 14 - len(listed))):
        cancel(lab, submit(server, spec(fast=5, slow=30), bundle()))
    open_panel(page, lab, "runs-layout")
    page.wait_for_function("() => document.querySelectorAll('.pitwall-job').length > 12")
    jobs = page.locator(".pitwall-jobs")
    # The oldest completed run is at the bottom, out of the list's own scrolling box.
    last = page.locator(".pitwall-job:has(.pitwall-compare-pick)").last
    last_id = last.get_attribute("data-id")
    assert last.bounding_box()["y"] > jobs.bounding_box()["y"] + jobs.bounding_box()["height"]
    last.locator(".pitwall-id").click()
    page.wait_for_selector(f".pitwall-detail h4:text-is('{last_id}')")
    plotted(page, "final")

    chart = page.locator(CHART)
    box = chart.bounding_box()
    view = page.viewport_size
    assert box["x"] >= 0 and box["x"] + box["width"] <= view["width"], box
    assert box["y"] >= 0 and box["y"] + box["height"] <= view["height"], box
    assert box["width"] > 234, box
    panel = page.locator(".pitwall-panel").bounding_box()
    assert box["x"] + box["width"] <= panel["x"] + panel["width"]  # not clipped by the panel
    svg = chart.locator(".main-svg").first
    assert abs(float(svg.get_attribute("width") or 0) - box["width"]) <= 2  # Plotly fits it
    page.screenshot(path=str(ARTIFACTS / "runs-long-list.png"))

    # Drag the handle under the chart: up, the chart shrinks; down, it grows back (as far
    # as the detail under it keeps some room); each time Plotly redraws to fit.
    shorter = drag(page, -100)
    assert box["height"] - 104 <= shorter["height"] <= box["height"] - 96, (box, shorter)
    taller = drag(page, 60)
    assert shorter["height"] + 56 <= taller["height"] <= shorter["height"] + 64, (shorter, taller)
    page.screenshot(path=str(ARTIFACTS / "runs-resized.png"))


def drag(page: Any, dy: float) -> Any:
    """Drag the chart's handle by ``dy`` px; the chart's box once Plotly has fitted it."""
    grip = page.locator(".pitwall-resize").bounding_box()
    x, y = grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y + dy / 2, steps=3)
    page.mouse.move(x, y + dy, steps=3)
    page.mouse.up()
    box = page.locator(CHART).bounding_box()
    page.wait_for_function("""(h) => {
      const svg = document.querySelector('.pitwall-equity .main-svg');
      return svg && Math.abs(Number(svg.getAttribute('height')) - h) <= 2;
    }""", arg=box["height"])
    return box
