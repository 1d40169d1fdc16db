"""The Jupyter server extension: one ExtensionApp and its one handler table."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Integer, List, Unicode

from pitwall_server import handlers


class PitwallExtension(ExtensionApp):
    """Run Backtest from JupyterLab: bundles notebooks and talks to the Backtest API."""

    name = "pitwall_server"
    api_url = Unicode("", config=True, help="Backtest API URL; empty runs the embedded stack "
                      "(API and workers inside this server).").tag(config=True)
    api_token = Unicode("", help="The researcher's API token (default: $PITWALL_TOKEN)."
                        ).tag(config=True)
    embedded_workers = Integer(1, help="Worker threads of the embedded stack.").tag(config=True)
    default_dataset = Unicode("sample").tag(config=True)
    default_symbols = List(Unicode(), default_value=["AAPL", "MSFT", "AMZN"]).tag(config=True)
    default_start = Unicode("2024-01-02").tag(config=True)
    default_end = Unicode("2024-03-28").tag(config=True)
    cell_map_dir = Unicode("", help="Where the cell maps of submitted bundles are kept (for "
                           "tracebacks named by cell); default: <jupyter data dir>/pitwall/"
                           "cell-maps.").tag(config=True)

    def initialize_settings(self) -> None:
        url = self.api_url or os.environ.get("PITWALL_API_URL", "")
        token = self.api_token or os.environ.get("PITWALL_TOKEN", "")
        if not url:
            from pitwall_server.embedded import start_embedded

            embedded = start_embedded(self.embedded_workers)
            url, token = embedded.url, embedded.token
            self.log.info("Pitwall: embedded Backtest API at %s", url)
        # Kernels started by this server inherit these two, and nothing more of Pitwall's.
        os.environ["PITWALL_API_URL"] = url
        os.environ["PITWALL_TOKEN"] = token
        # The widget of %%backtest links to the report through Jupyter, not around it (not
        # a PITWALL_ variable: those are the executor config, which refuses unknown ones).
        if self.serverapp is not None:
            os.environ["JUPYTER_PITWALL_BASE_URL"] = self.serverapp.base_url
        maps = Path(self.cell_map_dir) if self.cell_map_dir else \
            Path(jupyter_data_dir()) / "pitwall" / "cell-maps"
        self.settings.update({
            "pitwall_api_url": url.rstrip("/"), "pitwall_api_token": token,
            "pitwall_cell_maps": handlers.CellMaps(maps),
            "pitwall_defaults": {
                "dataset": self.default_dataset, "symbols": list(self.default_symbols),
                "start": self.default_start, "end": self.default_end,
                "today": dt.date.today().isoformat(),
            },
        })

    def initialize_handlers(self) -> None:
        table: list[tuple[str, Any]] = [
            (r"/pitwall/defaults", handlers.DefaultsHandler),
            (r"/pitwall/submit", handlers.SubmitHandler),
            (r"/pitwall/api/(.+)", handlers.ApiProxyHandler),
            (r"/pitwall/equity/([^/]+)", handlers.EquityHandler),
            (r"/pitwall/events/([A-Za-z0-9-]+)", handlers.EventsProxyHandler),
            (r"/pitwall/report/([^/]+)", handlers.ReportHandler),
            (r"/pitwall/artifacts/([^/]+)/([^/]+)", handlers.ArtifactHandler),
            (r"/pitwall/log/([^/]+)", handlers.LogHandler),
            (r"/pitwall/rerun/([^/]+)", handlers.RerunHandler),
        ]
        self.handlers.extend(table)
