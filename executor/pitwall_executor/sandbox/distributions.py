"""The Python distributions a job may import: the quant libraries of the sandbox image and
everything they require, as installed in this host's environment."""

from __future__ import annotations

import re
from importlib import metadata

#: What the Dockerfile installs (pinned by uv.lock there); the offline build takes
#: those present in this host's .venv and says which are missing.
QUANT_LIBRARIES = ("numpy", "pandas", "polars", "pyarrow", "scipy", "statsmodels",
                   "scikit-learn", "ta", "pydantic")


def norm(name: str) -> str:
    """A distribution name in its normal form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(wanted: tuple[str, ...] = QUANT_LIBRARIES,
                  ) -> tuple[list[metadata.Distribution], list[str]]:
    """The installed distributions ``wanted`` needs (with dependencies), and the missing."""
    found: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    todo = list(wanted)
    while todo:
        name = norm(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in map(norm, wanted):
                missing.append(name)
            continue
        found[name] = dist
        for req in dist.requires or []:
            if "extra ==" in req or "sys_platform ==" in req or "platform_system" in req:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    return sorted(found.values(), key=lambda d: norm(d.metadata["Name"])), sorted(missing)
