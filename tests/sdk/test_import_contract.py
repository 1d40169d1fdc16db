"""What runs in the sandbox loads none of the trusted or notebook-side code.

The sandbox side of the SDK (docs/architecture.md §3, §5) is the strategy API a strategy
imports and ``pitwall.sandbox``. It must never load the trusted engine, the notebook
tools, Plotly, ipywidgets, httpx or the backend: the sandbox only decides, the worker
measures (§1.1), and every module imported is start-up time of every cold sandbox.
Checked twice:
statically over the source (tests/import_graph.py: every import, also inside functions,
followed through the SDK's modules and their parent packages), and at run time in fresh
interpreters: importing each module, and running the runner on a vectorized job with a
lookahead audit and on an event job, exactly as ``python -m pitwall.sandbox.runner``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pytest
from tests.import_graph import PACKAGES, Import, chain_to, graph, imports_of, modules

from pitwall.lockstep import DUE, END, StepWriter, write_frame
from pitwall.prefix_wire import BARS, CALL
from pitwall.prefix_wire import END as PREFIX_END

#: What the sandbox side may never load (a package counts with its submodules).
FORBIDDEN = ("pitwall.engine", "pitwall.notebook", "plotly", "ipywidgets", "httpx",
             "pitwall_executor", "pitwall_server", "IPython", "tornado")
#: The strategy API a strategy imports, and the wire formats the sandbox speaks.
STRATEGY_SIDE = ("pitwall", "pitwall.strategy", "pitwall.events", "pitwall.event_strategy",
                 "pitwall.context", "pitwall.orders", "pitwall.schedule", "pitwall.frames",
                 "pitwall.lockstep", "pitwall.errors")
SANDBOX_SIDE = (*STRATEGY_SIDE,
                *sorted(m for m in modules() if m.split(".")[:2] == ["pitwall", "sandbox"]))
#: Faces that hand out trusted or notebook-side names lazily (module ``__getattr__``):
#: their deferred imports run only when a caller asks for such a name, so only their
#: module-level imports count here; the run-time checks below prove the rest.
LAZY_FACES = ("pitwall", "pitwall.events")


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _executed_imports() -> dict[str, dict[str, Import]]:
    """The imports that run when a module does: not type-only ones, not a lazy face's
    deferred ones; plus the parent packages Python imports before any submodule."""
    edges: list[Import] = []
    for module in modules():
        if module.split(".")[0] != "pitwall":
            continue
        for edge in imports_of(module):
            if edge.type_only or (edge.deferred and module in LAZY_FACES):
                continue
            edges.append(edge)
            parts = edge.target.split(".")
            edges += [Import(module, ".".join(parts[:i]), edge.line, edge.deferred, False)
                      for i in range(1, len(parts)) if parts[0] in PACKAGES]
    return graph(edges)


def test_the_sandbox_side_imports_nothing_forbidden_in_its_source() -> None:
    adjacency = _executed_imports()
    found = {m: chain for m in SANDBOX_SIDE
             if (chain := chain_to(adjacency, m, set(FORBIDDEN)))}
    report = "\n".join(f"{m}:\n" + "\n".join(f"    {e.where()}" for e in chain)
                       for m, chain in found.items())
    assert not found, ("sandbox-side modules reach forbidden imports (move the import to "
                       f"the trusted or notebook side, or make it lazy):\n{report}")


def _python(args: list[str], stdin: int | IO[bytes] = subprocess.DEVNULL,
            ) -> subprocess.CompletedProcess[bytes]:
    """A fresh interpreter that finds this tree's SDK first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL")}
    env["PYTHONPATH"] = str(PACKAGES["pitwall"].parent)
    return subprocess.run([sys.executable, *args], env=env, stdin=stdin, capture_output=True,
                          timeout=120, check=False)


def _loaded_after_import(module: str) -> list[str]:
    code = "import importlib, json, sys; importlib.import_module(sys.argv[1]); " \
           "print(json.dumps(sorted(sys.modules)))"
    done = _python(["-c", code, module])
    assert done.returncode == 0, done.stderr.decode()
    loaded: list[str] = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize("module", SANDBOX_SIDE)
def test_importing_a_sandbox_side_module_loads_nothing_forbidden(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert module in loaded
    assert [m for m in loaded if _forbidden(m)] == []


# Runs the runner as `python -m` would, then writes what the process had loaded.
_RUN_RUNNER = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "pitwall.sandbox.runner"
runpy.run_module("pitwall.sandbox.runner", run_name="__main__", alter_sys=True)
"""

VECTORIZED = """
import polars as pl
import pitwall

@pitwall.vectorized
def momentum(bars: pl.DataFrame, window: int = 3) -> pl.DataFrame:
    up = pl.col("close") > pl.col("close").shift(window).over("symbol")
    return bars.select("ts", "symbol", weight=pl.when(up).then(0.5).otherwise(0.0))
"""

EVENT = """
from pitwall.events import Strategy

class Alternate(Strategy):
    lookback = 5

    def on_bar(self, ctx):
        self.turn = not getattr(self, "turn", False)
        ctx.order_target_percent(ctx.symbols[0], 0.5 if self.turn else 0.0)
"""

START = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)


def _job(root: Path, strategy: str, spec: dict[str, object]) -> Path:
    (root / "bundle").mkdir(parents=True)
    (root / "input").mkdir()
    (root / "bundle" / "strategy.py").write_text(strategy)
    (root / "input" / "spec.json").write_text(json.dumps(spec))
    return root


def _bars(n: int) -> pl.DataFrame:
    close = [100 + (i % 5) - i * 0.1 for i in range(n)]
    return pl.DataFrame({
        "ts": [START + dt.timedelta(minutes=i) for i in range(n)], "symbol": ["AAA"] * n,
        "open": close, "high": [c + 1 for c in close], "low": [c - 1 for c in close],
        "close": close, "volume": [1000.0] * n,
    }).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def _run_runner(tmp_path: Path, job: Path, stdin: Path | None) -> tuple[int, bytes, list[str]]:
    out = tmp_path / f"{job.name}-modules.json"
    if stdin is None:
        done = _python(["-c", _RUN_RUNNER, str(out), str(job)])
    else:
        with stdin.open("rb") as feed:
            done = _python(["-c", _RUN_RUNNER, str(out), str(job)], stdin=feed)
    loaded: list[str] = json.loads(out.read_text())
    return done.returncode, done.stdout + done.stderr, loaded


def test_the_runner_loads_nothing_forbidden_on_a_vectorized_job(tmp_path: Path) -> None:
    bars = _bars(60)
    job = _job(tmp_path / "vectorized", VECTORIZED, {
        "entrypoint": "strategy.py:momentum", "params": {"window": 2}, "seed": 1})
    bars.write_ipc(job / "input" / "bars.arrow")
    code, output, loaded = _run_runner(tmp_path, job, None)
    assert code == 0, output.decode("utf-8", "replace")
    # The path really ran: the strategy and the simulated clock.
    assert {"strategy", "pitwall.sandbox.clock"} <= set(loaded)
    assert [m for m in loaded if _forbidden(m)] == []


@pytest.mark.parametrize("mode", ["audit", "stepped"])
def test_the_runner_loads_nothing_forbidden_on_the_prefix_channel(tmp_path: Path,
                                                                  mode: str) -> None:
    bars = _bars(60)
    job = _job(tmp_path / mode, VECTORIZED, {
        "kind": "prefixes", "mode": mode, "entrypoint": "strategy.py:momentum",
        "params": {"window": 2}, "seed": 1})
    calls = tmp_path / f"{mode}-calls.bin"
    # The worker's side of the prefix channel, recorded: two prefixes, then the end.
    with calls.open("wb") as fh:
        for lo, hi in ((0, 20), (20, 40)):
            buf = io.BytesIO()
            bars.slice(lo, hi - lo).write_ipc_stream(buf)
            write_frame(fh.fileno(), BARS, buf.getvalue())
            write_frame(fh.fileno(), CALL)
        write_frame(fh.fileno(), PREFIX_END)
    code, output, loaded = _run_runner(tmp_path, job, calls)
    assert code == 0, output.decode("utf-8", "replace")
    assert output.count(b"PWL1") == 2  # one answer per call
    assert {"pitwall.sandbox.prefixes", "pitwall.sandbox.clock"} <= set(loaded)
    assert [m for m in loaded if _forbidden(m)] == []


def test_the_runner_loads_nothing_forbidden_on_an_event_job(tmp_path: Path) -> None:
    job = _job(tmp_path / "event", EVENT, {
        "kind": "event", "entrypoint": "strategy.py", "params": {}, "seed": 1,
        "symbols": ["AAA"], "capital": 10_000.0})
    steps = tmp_path / "steps.bin"
    # The feeder's side of the lock-step channel, recorded: three bars, then the end.
    with steps.open("wb") as fh:
        writer = StepWriter(fh.fileno(), n_symbols=1, max_rows=5)
        bars = _bars(3)
        for i in range(3):
            row = np.array([[[bars[c][i]] for c in ("open", "high", "low", "close", "volume")]])
            now = int(bars["ts"][i].timestamp() * 1_000_000)
            writer.send(now, row, [], cash=10_000.0, positions=None, flags=DUE)
        writer.send(now, np.empty((0, 5, 1)), [], cash=10_000.0, positions=None, flags=END)
    code, output, loaded = _run_runner(tmp_path, job, steps)
    assert code == 0, output.decode("utf-8", "replace")
    assert output.count(b"PWL1") >= 5  # READY, three answers with orders, the last one
    assert {"strategy", "pitwall.sandbox.event_loop", "pitwall.events"} <= set(loaded)
    assert [m for m in loaded if _forbidden(m)] == []


def test_a_forbidden_import_is_caught_in_the_source() -> None:
    """The static check sees a deferred import and follows a chain of modules."""
    fake = {"pitwall.sandbox.fake": {"pitwall.fake_wire": Import(
                "pitwall.sandbox.fake", "pitwall.fake_wire", 3, True, False)},
            "pitwall.fake_wire": {"plotly": Import(
                "pitwall.fake_wire", "plotly", 7, True, False)}}
    chain = chain_to(fake, "pitwall.sandbox.fake", set(FORBIDDEN))
    assert [(e.source, e.target) for e in chain] == [
        ("pitwall.sandbox.fake", "pitwall.fake_wire"), ("pitwall.fake_wire", "plotly")]
    # And the real graph holds the lazy faces' deferred imports, only excused for them.
    assert any(e.deferred and e.target.startswith("pitwall.notebook")
               for e in imports_of("pitwall"))
