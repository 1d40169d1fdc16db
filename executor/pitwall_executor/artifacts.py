"""The artifact store: a job's result files, kept per attempt.

Files are first written under ``<root>/<job>/attempt-<n>/`` and only recorded in the
metadata store by the completion that wins the attempt fence, so a stale attempt's
files are never referenced (and are removed by the worker that lost).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class LocalArtifactStore:
    """Artifacts in a local folder (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        # The worker writes only here: an id that could name a path elsewhere is a bug.
        if not _SAFE_ID.fullmatch(job_id) or ".." in job_id or attempt < 0:
            raise ValueError(f"refusing artifact path for job {job_id!r} attempt {attempt}")
        path = self.root / job_id / f"attempt-{attempt}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def describe(self, path: Path) -> dict[str, Any]:
        """The metadata row of one artifact file."""
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return {"name": path.name, "uri": path.resolve().as_uri(), "sha256": digest.hexdigest(),
                "size": path.stat().st_size}

    def discard(self, job_id: str, attempt: int) -> None:
        shutil.rmtree(self.root / job_id / f"attempt-{attempt}", ignore_errors=True)
