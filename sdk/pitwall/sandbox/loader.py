"""Loading a bundle's strategy inside the sandbox, and seeding what it may draw from.

Shared by the vectorized runner and the event loop: one way to import the entry module,
one way to seed ``random`` and NumPy (docs/architecture.md §5, determinism).
"""

from __future__ import annotations

import datetime as dt
import importlib.abc
import importlib.util
import io
import random
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitwall.event_strategy import Strategy
    from pitwall.sandbox.clock import SimulatedClock

_MODULE_FILE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")
_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_entrypoint(entrypoint: str) -> tuple[str, str | None]:
    """``"strategy.py:fn"`` → ``("strategy.py", "fn")``; ``"strategy.py"`` → ``(.., None)``."""
    module, _, name = entrypoint.partition(":")
    if not _MODULE_FILE.match(module) or (name and not _FUNCTION.match(name)):
        raise ValueError(f"entrypoint {entrypoint!r} must look like 'strategy.py:function_name'")
    return module, name or None


def seed_everything(seed: int) -> None:
    """Seed ``random`` now and NumPy's global generator now or when it is first imported.

    Importing NumPy only to seed it costs every cold sandbox a noticeable share of its
    start-up in gVisor (docs/benchmarks.md, "Where the rest goes"); a strategy that never
    imports it should not pay, and one that does gets the same seeded state.
    """
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed)
        return
    for finder in sys.meta_path:
        if isinstance(finder, _SeedNumpyOnImport):
            finder.seed = seed
            return
    sys.meta_path.insert(0, _SeedNumpyOnImport(seed))


class _SeedNumpyOnImport(importlib.abc.MetaPathFinder):
    """Import hook: seeds ``numpy.random`` right after ``numpy`` is first executed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "numpy":
            return None
        sys.meta_path.remove(self)  # find the real numpy once, then get out of the way
        spec = importlib.util.find_spec("numpy")
        if spec is None or spec.loader is None:
            return spec
        real, hook = spec.loader, self

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return real.create_module(spec)

            def exec_module(self, module: Any) -> None:
                real.exec_module(module)
                module.random.seed(hook.seed)

        spec.loader = _Loader()
        return spec


def _import_entry(bundle: Path, entrypoint: str) -> tuple[dict[str, Any], str | None]:
    """Execute the bundle's entry module; its namespace and the name the entrypoint gives."""
    module_file, name = parse_entrypoint(entrypoint)
    path = bundle / module_file
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {module_file} from the bundle")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    if str(bundle) not in sys.path:
        sys.path.insert(0, str(bundle))  # helper modules shipped next to the strategy
    spec.loader.exec_module(module)
    return vars(module), name


def load_strategy(bundle: Path, entrypoint: str) -> Any:
    """The bundle's vectorized strategy function."""
    from pitwall.strategy import find_strategy

    return find_strategy(*_import_entry(bundle, entrypoint))


def load_event_strategy(bundle: Path, entrypoint: str) -> type[Strategy]:
    """The bundle's :class:`~pitwall.event_strategy.Strategy` subclass."""
    from pitwall.event_strategy import find_event_strategy

    return find_event_strategy(*_import_entry(bundle, entrypoint))


def call_strategy(fn: Any, bars: Any, params: dict[str, Any], *, seed: int,
                  clock: SimulatedClock) -> bytes:
    """One call of the strategy, re-seeded and with the clock at the frame's last bar: its
    weights as Arrow IPC."""
    return encode_weights(strategy_frame(fn, bars, params, seed=seed, clock=clock))


def strategy_frame(fn: Any, bars: Any, params: dict[str, Any], *, seed: int,
                   clock: SimulatedClock) -> Any:
    """What :func:`call_strategy` sends, before it is encoded: the strategy's DataFrame."""
    import polars as pl

    clock.set(last_ts(bars))
    seed_everything(seed)
    result = fn(bars, **params)
    if not isinstance(result, pl.DataFrame):
        raise TypeError(
            f"the strategy returned {type(result).__name__}; return a polars DataFrame "
            "with columns ts, symbol, weight"
        )
    return result


def encode_weights(frame: Any) -> bytes:
    """A polars DataFrame as the Arrow IPC stream the worker decodes."""
    buf = io.BytesIO()
    frame.write_ipc_stream(buf)
    return bytes(buf.getvalue())


def last_ts(bars: Any) -> dt.datetime:
    """The simulated "now" of a vectorized run: the ts of the last bar it is given."""
    last = bars.get_column("ts").max() if bars.height else None
    return last if isinstance(last, dt.datetime) else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
