"""The in-sandbox runner (untrusted side): ``python -m pitwall.runner /job``.

Reads ``/job/input/spec.json`` (``entrypoint``, ``params``, ``seed``), the strategy in
``/job/bundle/`` and the bars in ``/job/input/bars.arrow``; calls the strategy; writes
its frame as an Arrow IPC stream in a :mod:`pitwall.channel` frame to the *original*
stdout. Before any strategy code is imported, fd 1 is moved to a private descriptor and
fd 1 becomes a copy of fd 2, so the strategy's ``print()`` goes to the log. On an
exception the traceback goes to stderr, an ERROR frame to the channel, and the exit code
is :data:`STRATEGY_FAILED`.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import re
import sys
import traceback
from pathlib import Path
from typing import IO, Any

from pitwall.channel import FrameKind, encode_frame

STRATEGY_FAILED = 3
_MODULE_FILE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")
_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def take_result_channel() -> IO[bytes]:
    """Move the result channel off fd 1; from now on fd 1 (``print``) writes to stderr."""
    sys.stdout.flush()
    channel_fd = os.dup(1)  # non-inheritable: a subprocess of the strategy cannot get it
    os.dup2(2, 1)
    return os.fdopen(channel_fd, "wb")


def parse_entrypoint(entrypoint: str) -> tuple[str, str | None]:
    """``"strategy.py:fn"`` → ``("strategy.py", "fn")``; ``"strategy.py"`` → ``(.., None)``."""
    module, _, name = entrypoint.partition(":")
    if not _MODULE_FILE.match(module) or (name and not _FUNCTION.match(name)):
        raise ValueError(f"entrypoint {entrypoint!r} must look like 'strategy.py:function_name'")
    return module, name or None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional for a strategy; polars does not need it
        return
    np.random.seed(seed)


def load_strategy(bundle: Path, entrypoint: str) -> Any:
    from pitwall.strategy import find_strategy

    module_file, name = parse_entrypoint(entrypoint)
    path = bundle / module_file
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {module_file} from the bundle")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    sys.path.insert(0, str(bundle))  # helper modules shipped next to the strategy
    spec.loader.exec_module(module)
    return find_strategy(vars(module), name)


def run_job(job: Path) -> bytes:
    """Run the job's strategy and return its output as an Arrow IPC stream."""
    import polars as pl

    spec = json.loads((job / "input" / "spec.json").read_text())
    seed_everything(int(spec.get("seed", 0)))
    fn = load_strategy(job / "bundle", str(spec["entrypoint"]))
    bars = pl.read_ipc(job / "input" / "bars.arrow")
    result = fn(bars, **dict(spec.get("params") or {}))
    if not isinstance(result, pl.DataFrame):
        raise TypeError(
            f"the strategy returned {type(result).__name__}; return a polars DataFrame "
            "with columns ts, symbol, weight"
        )
    buf = io.BytesIO()
    result.write_ipc_stream(buf)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pitwall.runner JOB_DIR``; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    channel = take_result_channel()
    job = Path(args[0] if args else "/job")
    try:
        payload = run_job(job)
    except BaseException as exc:  # a strategy may raise anything, even SystemExit
        traceback.print_exc()
        sys.stderr.flush()
        err = {"error": type(exc).__name__, "message": str(exc)[:2000]}
        channel.write(encode_frame(FrameKind.ERROR, json.dumps(err).encode()))
        channel.flush()
        return STRATEGY_FAILED
    channel.write(encode_frame(FrameKind.RESULT, payload))
    channel.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
