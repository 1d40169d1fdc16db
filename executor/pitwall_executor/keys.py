"""Deployment secrets kept in the data dir: created once (mode 0600), shared by every
process that shares the data dir (API replicas, workers of one host)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_secret(data_dir: Path, name: str) -> bytes:
    """The 32-byte secret ``name`` in ``data_dir``, created on first use."""
    path = data_dir / name
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return bytes.fromhex(value)
