"""The live panel that ``%%backtest`` shows under a cell (ipywidgets + a Plotly FigureWidget).

A background thread follows the job through the API and updates the widgets, so the
kernel stays free for other cells while the backtest runs.
"""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

from pitwall.models import JobStatus, JobView

if TYPE_CHECKING:
    from pitwall.client import Client


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
                                              "title": {"text": "equity"}})
        self.figure.add_scatter(x=[], y=[], mode="lines", name="equity")
        self.metrics = widgets.HTML("")
        self.report = widgets.HTML("")
        self.cancel_button = widgets.Button(description="Cancel", button_style="warning")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.box = widgets.VBox([self.status, self.progress, self.figure, self.metrics,
                                 self.report, self.cancel_button])
        self.done = threading.Event()
        self.view: JobView | None = None
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
            while not self.done.is_set():
                view = self.client.get(self.job_id)
                self.update(view)
                if view.status.terminal:
                    self.finish(view)
                    return
                self.done.wait(self.poll)
        except Exception as exc:  # shown in the panel: a thread has nowhere else to say it
            self.status.value = f"<b>{html.escape(self.job_id)}</b>: lost the job ({exc})"
            self.done.set()

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
            with self.figure.batch_update():
                self.figure.data[0].x = equity.get_column("ts").to_list()
                self.figure.data[0].y = equity.get_column("equity").to_list()
            url = self.client.report_url(view.id)
            self.report.value = f"<a href='{html.escape(url)}' target='_blank'>report</a>"
        self.done.set()
