"""The ``pitwall`` command line: every command attached to the root group, in one place."""

from __future__ import annotations

from pitwall_executor.cli.app import main
from pitwall_executor.cli.data import data
from pitwall_executor.cli.deploy import deploy
from pitwall_executor.cli.image import image
from pitwall_executor.cli.lake import cache, push
from pitwall_executor.cli.run import jobs, run
from pitwall_executor.cli.serve import admin, api, serve
from pitwall_executor.cli.worker import worker

for _command in (run, jobs, data, serve, api, admin, worker, image, deploy):
    main.add_command(_command)
for _command in (push, cache):
    data.add_command(_command)

__all__ = ["main"]
