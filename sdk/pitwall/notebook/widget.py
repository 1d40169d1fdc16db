"""The live panel that ``%%backtest`` shows under a cell (ipywidgets + a Plotly FigureWidget).

A background thread follows the job's events WebSocket and updates the widgets, so the
kernel stays free for other cells while the backtest runs: the progress bar moves and the
equity curve grows from the progress events' points (titled "equity (running)"), and on
completion the full curve of the equity artifact replaces it. A lost stream is resumed
after the last event seen; without one the panel falls back to polling the job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import threading
from typing import TYPE_CHECKING, Any

from pitwall.models import JobStatus, JobView, ProgressEvent

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

    def __init__(self, client: Client, job_id: str, *, poll: float = 0.5) -> None:
        widgets, go = _widgets()
        self.client = client
        self.job_id = job_id
        self.poll = poll
        self.status = widgets.HTML(f"<b>{html.escape(job_id)}</b>: submitted")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                              description="progress")
        self.figure = go.FigureWidget(layout={"height": 320, "margin": {"t": 30},
                                              "title": {"text": EQUITY_TITLE}})
        self.figure.add_scatter(x=[], y=[], mode="lines", name="equity")
        self.metrics = widgets.HTML("")
        self.report = widgets.HTML("")
        self.cancel_button = widgets.Button(description="Cancel", button_style="warning")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.box = widgets.VBox([self.status, self.progress, self.figure, self.metrics,
                                 self.report, self.cancel_button])
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
        if event.status is not None and event.status is not JobStatus.COMPLETED:
            reason = f" — {html.escape(event.message)}" if event.message else ""
            self.status.value = (f"<b>{html.escape(self.job_id)}</b>: "
                                 f"<span class='pitwall-status'>{event.status.value}</span>"
                                 f"{reason}")

    def update(self, view: JobView) -> None:
        self.view = view
        reason = f" — {html.escape(view.reason)}" if view.reason else ""
        self.status.value = (f"<b>{html.escape(view.id)}</b>: "
                             f"<span class='pitwall-status'>{view.status.value}</span>{reason}")
        self.progress.value = view.progress

    def finish(self, view: JobView) -> None:
        from pitwall.engine.report import format_metrics

        self.cancel_button.disabled = True
        if view.status is JobStatus.COMPLETED and view.metrics is not None:
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                           for k, v in format_metrics(view.metrics))
            self.metrics.value = f"<table class='pitwall-metrics'>{rows}</table>"
            equity = self.client.equity(view.id)
            self.figure.layout.title.text = EQUITY_TITLE  # before the data: see on_event
            with self.figure.batch_update():  # the full curve replaces the running one
                self.figure.data[0].x = equity.get_column("ts").to_list()
                self.figure.data[0].y = equity.get_column("equity").to_list()
            url = self.client.report_url(view.id)
            self.report.value = f"<a href='{html.escape(url)}' target='_blank'>report</a>"
        self.done.set()
