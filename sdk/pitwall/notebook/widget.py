"""The live panel that ``%%backtest`` shows under a cell (ipywidgets + a Plotly FigureWidget).

A background thread follows the job's events WebSocket and updates the widgets, so the
kernel stays free for other cells while the backtest runs: the progress bar moves and the
equity curve grows from the progress events' points (titled "equity (running)"), and on
completion the full curve of the equity artifact replaces it. A lost stream is resumed
after the last event seen; without one the panel falls back to polling the job.

Once the run is complete, its tear sheet (``tearsheet.json``) folds out under the
metrics. The audit's verdict is part of the status line (a flagged run is never a plain success),
and a run that trades a lot without any costs says so. A failed run shows its failure in
place of the chart: the traceback of its log, the frames named by cell (``In [n]`` or
"this cell", from the cell map of :func:`pitwall.notebook.magic.dependency_bundle`).
Links (report, log) go through Jupyter (``/pitwall/...`` under its base URL) when the
kernel runs under the lab's server extension, which a remote browser can reach.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import os
import threading
from typing import TYPE_CHECKING, Any

from pitwall.models import BacktestSpec, JobStatus, JobView, Metrics, ProgressEvent
from pitwall.tracebacks import CellSpan, clean_log

if TYPE_CHECKING:
    from pitwall.notebook.client import Client


EQUITY_TITLE = "equity"
RUNNING_TITLE = "equity (running)"


def _widgets() -> tuple[Any, Any]:
    try:
        import ipywidgets
        import plotly.graph_objects as go
    except ImportError as exc:  # pragma: no cover - both are dependencies of the SDK
        raise ImportError("the backtest panel needs ipywidgets and plotly: "
                          "pip install ipywidgets plotly anywidget") from exc
    return ipywidgets, go


class BacktestPanel:
    """Progress, status, equity curve, metrics, report link and a cancel button for one job."""

    def __init__(self, client: Client, job_id: str, *, poll: float = 0.5,
                 cells: list[CellSpan] | None = None) -> None:
        widgets, go = _widgets()
        self.client = client
        self.job_id = job_id
        self.poll = poll
        self.cells = list(cells or [])
        self.status = widgets.HTML(f"<b>{html.escape(job_id)}</b>: submitted")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                              description="progress")
        self.figure = go.FigureWidget(layout={"height": 320, "margin": {"t": 30},
                                              "title": {"text": EQUITY_TITLE}})
        self.figure.add_scatter(x=[], y=[], mode="lines", name="equity")
        self.metrics = widgets.HTML("")
        self.tearsheet = widgets.HTML("")
        self.report = widgets.HTML("")
        self.warning = widgets.HTML("")
        self.log = widgets.HTML("")
        self.cancel_button = widgets.Button(description="Cancel", button_style="warning")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.box = widgets.VBox([self.status, self.progress, self.warning, self.figure,
                                 self.metrics, self.tearsheet, self.report, self.log,
                                 self.cancel_button])
        self.done = threading.Event()
        self.view: JobView | None = None
        self.after = 0  # the last event seq seen
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def start(self) -> BacktestPanel:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.client.cancel(self.job_id)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)  # type: ignore[no-untyped-call]

    def _follow(self) -> None:
        try:
            asyncio.run(self._stream())  # this thread's own loop: the kernel's stays free
        except Exception as exc:  # shown in the panel: a thread has nowhere else to say it
            self.status.value = f"<b>{html.escape(self.job_id)}</b>: lost the job ({exc})"
            self.done.set()

    async def _stream(self) -> None:
        self.update(self.client.get(self.job_id))
        while not self.done.is_set():
            try:
                async for event in self.client.stream_events(self.job_id, after=self.after):
                    self.on_event(event)
            except (ConnectionError, OSError):
                pass  # resumed below, after the last event seen
            view = self.client.get(self.job_id)
            self.update(view)
            if view.status.terminal:
                self.finish(view)
                return
            await asyncio.sleep(self.poll)

    def on_event(self, event: ProgressEvent) -> None:
        """One event of the job: progress, new equity points, or a status change."""
        if event.seq <= self.after:
            return
        self.after = event.seq
        if event.progress is not None and event.kind == "progress":
            self.progress.value = event.progress
        if event.equity:
            x = [dt.datetime.fromtimestamp(ts / 1000, dt.UTC) for ts, _ in event.equity]
            y = [value for _, value in event.equity]
            trace = self.figure.data[0]
            self.figure.layout.title.text = RUNNING_TITLE
            with self.figure.batch_update():
                trace.x = (*(trace.x or ()), *x)
                trace.y = (*(trace.y or ()), *y)
        if event.kind == "progress" and event.data and event.data.get("metrics"):
            view = self.client.get(self.job_id)  # the metrics, shown before the verdict
            if view.metrics is not None and not view.status.terminal:
                self.show_metrics(view.metrics, view.spec)
        if event.status is not None and event.status is not JobStatus.COMPLETED:
            reason = f" — {html.escape(event.message)}" if event.message else ""
            self.status.value = (f"<b>{html.escape(self.job_id)}</b>: "
                                 f"<span class='pitwall-status'>{event.status.value}</span>"
                                 f"{reason}")

    def update(self, view: JobView) -> None:
        self.view = view
        reason = f" — {html.escape(view.reason)}" if view.reason else ""
        self.status.value = (f"<b>{html.escape(view.id)}</b>: "
                             f"<span class='pitwall-status' data-status='{view.status.value}'>"
                             f"{view.status.value}</span>{_badge(view)}{reason}")
        self.progress.value = view.progress

    def show_metrics(self, metrics: Metrics, spec: BacktestSpec) -> None:
        """The metrics table with the audit's verdict (``pending`` while it runs)."""
        from pitwall.engine.report import cost_warning, format_metrics

        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in format_metrics(metrics))
        audit = metrics.lookahead
        verdict = (f"<p class='pitwall-audit' data-audit='{audit.status}'>"
                   f"{html.escape(audit.statement)}</p>" if audit and audit.statement else "")
        self.metrics.value = f"{verdict}<table class='pitwall-metrics'>{rows}</table>"
        warning = cost_warning(metrics, spec.costs)
        if warning:
            self.warning.value = (f"<p class='pitwall-cost-warning' style='color:#b06000'>"
                                  f"&#9888; {html.escape(warning)}</p>")

    def finish(self, view: JobView) -> None:
        self.cancel_button.disabled = True
        if view.status is JobStatus.COMPLETED and view.metrics is not None:
            flagged = view.metrics.lookahead is not None and \
                view.metrics.lookahead.status == "flagged"
            self.progress.value = 1.0
            self.progress.bar_style = "danger" if flagged else "success"
            self.show_metrics(view.metrics, view.spec)
            equity = self.client.equity(view.id)
            self.figure.layout.title.text = EQUITY_TITLE  # before the data: see on_event
            with self.figure.batch_update():  # the full curve replaces the running one
                self.figure.data[0].x = equity.get_column("ts").to_list()
                self.figure.data[0].y = equity.get_column("equity").to_list()
            self.report.value = self._link("report", view.id)
            self.show_tearsheet(view)
        else:
            self.show_failure(view)
        self.done.set()

    def show_tearsheet(self, view: JobView) -> None:
        """The run's tear sheet (``tearsheet.json``, written with the report just after the
        commit) under the metrics, folded; a note when it cannot be read."""
        from pitwall.engine.tearsheet_page import panel_html
        from pitwall.models import TearSheet

        try:
            sheet = TearSheet.model_validate_json(self.client.artifact(view.id,
                                                                       "tearsheet.json"))
        except Exception as exc:  # no tear sheet (an outage, an old run): the rest stands
            self.tearsheet.value = (f"<p class='pitwall-tearsheet-missing'>No tear sheet: "
                                    f"{html.escape(str(exc))}</p>")
            return
        self.tearsheet.value = panel_html(sheet, view.spec.costs, view.spec.execution)

    def _link(self, what: str, job_id: str) -> str:
        """A link to the report (or the log) through Jupyter when it runs the lab's server
        extension, else the API's signed URL (a kernel outside the lab)."""
        base = os.environ.get("JUPYTER_PITWALL_BASE_URL")
        quoted = html.escape(job_id)
        if base:
            path = "report/" if what == "report" else "artifacts/"
            url = f"{base.rstrip('/')}/pitwall/{path}{job_id}" + \
                ("/log.txt" if what == "log" else "")
            return (f"<a href='{html.escape(url)}' target='_blank' "
                    f"data-pitwall-open='{what}' data-job='{quoted}'>{what}</a>")
        if what != "report":
            return ""
        url = self.client.report_url(job_id)
        return f"<a href='{html.escape(url)}' target='_blank'>{what}</a>"

    def show_failure(self, view: JobView) -> None:
        """The failure in place of the chart: why, and the traceback with its cells named."""
        self.progress.bar_style = "warning" if view.status is JobStatus.CANCELLED else "danger"
        self.progress.description = view.status.value.lower()
        self.box.children = tuple(c for c in self.box.children if c is not self.figure)
        try:
            failure = clean_log(self.client.logs(view.id), self.cells)
        except Exception as exc:  # no log (cancelled before it ran, an outage): say so
            self.log.value = (f"<p class='pitwall-log-missing'>No log: "
                              f"{html.escape(str(exc))}</p>")
            return
        where = f" in <b>{html.escape(failure.cell)}</b>" if failure.cell else ""
        hidden = (f"{failure.noise_lines} line(s) before the traceback left out; "
                  if failure.noise_lines else "")
        full = self._link("log", view.id)
        self.log.value = (
            f"<div class='pitwall-log'><p><b>Log</b>: {html.escape(failure.error)}{where}</p>"
            f"<pre style='white-space:pre-wrap;max-height:24em;overflow:auto'>"
            f"{html.escape(failure.traceback)}</pre>"
            f"<p style='color:#666'>{hidden}{'full ' + full if full else ''}</p></div>")


def _badge(view: JobView) -> str:
    """The audit's verdict next to the status: a flagged run never reads as a success."""
    audit = view.metrics.lookahead if view.metrics is not None else None
    if audit is None or audit.status != "flagged":
        return ""
    return (" <span class='pitwall-audit' data-audit='flagged' "
            "style='color:#d93025;font-weight:600'>&#9888; lookahead flagged</span>")
