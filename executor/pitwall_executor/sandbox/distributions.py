"""The Python distributions a job may import: the quant libraries of the sandbox image and
everything they require, as installed in this host's environment, and which of their
files the image holds."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

#: What the Dockerfile installs (pinned by uv.lock there); the offline build takes
#: those present in this host's .venv and says which are missing.
QUANT_LIBRARIES = ("numpy", "pandas", "polars", "pyarrow", "scipy", "statsmodels",
                   "scikit-learn", "ta", "pydantic")
#: Directories of a distribution a job never needs: the libraries' own test suites
#: (about half their files) and bytecode the image compiles itself.
SKIPPED_DIRS = frozenset({"tests", "test", "__pycache__"})


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


def image_files(dist: metadata.Distribution, site: Path) -> Iterator[Path]:
    """The installed files of ``dist`` under ``site`` (resolved) that the image holds:
    not its tests, not its bytecode, nothing installed outside ``site`` (scripts)."""
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f))).resolve()
        if site not in path.parents or SKIPPED_DIRS.intersection(path.relative_to(site).parts):
            continue
        if path.is_file():
            yield path
