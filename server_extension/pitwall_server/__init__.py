"""Pitwall's Jupyter server extension (and the home of the built labextension)."""

from __future__ import annotations

from typing import Any


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "pitwall-labextension"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from pitwall_server.extension import PitwallExtension

    return [{"module": "pitwall_server", "app": PitwallExtension}]
