"""Strategies for the lookahead audit tests: each a whole ``strategy.py``, one function ``s``.

The leaky ones read bars after the one they decide on, the way real research code does
by mistake; the honest ones decide at ``t`` from bars up to ``t`` only. All return valid
weights on the full frame (nulls filled), so the job itself would complete.
"""

from __future__ import annotations

HEADER = "import polars as pl\nimport pitwall\n\n\n@pitwall.vectorized\ndef s(bars):\n"


def _module(body: str) -> str:
    return HEADER + "".join(f"    {line}\n" for line in body.strip().splitlines())


LEAKY: dict[str, str] = {
    # z-score against the mean and std of the whole sample, future included
    "full_sample_zscore": _module("""
c = pl.col("close")
z = ((c - c.mean()) / c.std()).over("symbol")
return bars.select("ts", "symbol", weight=(z.clip(-2, 2) / 20).fill_null(0.0))
"""),
    # a moving average centred on t averages 10 bars after t
    "centered_rolling_mean": _module("""
c = pl.col("close")
ma = c.rolling_mean(21, center=True).over("symbol")
return bars.select("ts", "symbol", weight=((c - ma) / ma * 50).clip(-0.3, 0.3).fill_null(0.0))
"""),
    # tomorrow's (next bar's) close
    "next_close": _module("""
c = pl.col("close")
ret = (c.shift(-1) / c - 1).over("symbol")
return bars.select("ts", "symbol", weight=(ret * 100).clip(-0.3, 0.3).fill_null(0.0))
"""),
    # the highest close from t to the end of the data
    "future_max": _module("""
c = pl.col("close")
return bars.select("ts", "symbol", weight=(c / c.cum_max(reverse=True).over("symbol")) / 3)
"""),
    # prices normalised by their maximum over the whole run
    "global_max_normalisation": _module("""
c = pl.col("close")
return bars.select("ts", "symbol", weight=(c / c.max().over("symbol")) / 3)
"""),
}

HONEST: dict[str, str] = {
    "sma_crossover": _module("""
c = pl.col("close")
fast, slow = c.rolling_mean(10).over("symbol"), c.rolling_mean(40).over("symbol")
long = (fast > slow).fill_null(False).cast(pl.Float64)
return bars.select("ts", "symbol", weight=long / 3)
"""),
    "rolling_zscore": _module("""
c = pl.col("close")
z = ((c - c.rolling_mean(30)) / c.rolling_std(30)).over("symbol")
return bars.select("ts", "symbol", weight=(-z.clip(-2, 2) / 20).fill_null(0.0).fill_nan(0.0))
"""),
    "expanding_mean": _module("""
c = pl.col("close")
mean = (c.cum_sum() / c.cum_count()).over("symbol")
return bars.select("ts", "symbol", weight=pl.when(c > mean).then(0.3).otherwise(-0.1))
"""),
    "momentum": _module("""
c = pl.col("close")
mom = (c / c.shift(20) - 1).over("symbol")
return bars.select("ts", "symbol", weight=(mom * 20).clip(-0.3, 0.3).fill_null(0.0))
"""),
    "ewm": _module("""
c = pl.col("close")
fast, slow = c.ewm_mean(span=12).over("symbol"), c.ewm_mean(span=60).over("symbol")
return bars.select("ts", "symbol", weight=pl.when(fast > slow).then(0.3).otherwise(-0.1))
"""),
    # a one-hour time-based window, not a count of rows
    "time_window": _module("""
c = pl.col("close")
ma = c.rolling_mean_by("ts", window_size="1h").over("symbol")
return bars.select("ts", "symbol", weight=((c - ma) / ma * 20).clip(-0.3, 0.3).fill_null(0.0))
"""),
    # cross-sectional rank of 30-bar momentum at each bar
    "cross_sectional_rank": _module("""
c = pl.col("close")
mom = (c / c.shift(30) - 1).over("symbol").fill_null(0.0)
ranked = bars.with_columns(m=mom).with_columns(r=pl.col("m").rank().over("ts"))
return ranked.select("ts", "symbol", weight=(pl.col("r") - 1.5) / 5)
"""),
    # seeded noise drawn per symbol in time order: the same draw for a bar whatever
    # comes after it (the platform seeds NumPy before every call)
    "seeded_random": _module("""
import numpy as np
ordered = bars.sort("symbol", "ts")
counts = ordered.group_by("symbol", maintain_order=True).len().get_column("len").to_list()
draws = np.random.rand(max(counts))
noise = np.concatenate([draws[:n] for n in counts])
return ordered.select("ts", "symbol", weight=pl.Series(noise) / 5 - 0.1)
"""),
}

#: The sparse and stateful leaks of the audit's second version (docs/lookahead-audit.md):
#: each peeks only where a fixed cut rarely lands, or hides its future in state.
_NY = 'pl.col("ts").dt.convert_time_zone("America/New_York")'
# The next close relative to this one: never 0 where it peeks (a tick-sized market often
# repeats a close, and a peek that changes no weight is not one the audit can see).
_PEEK = '(pl.col("close").shift(-1) / pl.col("close")).over("symbol").fill_null(0.0) * 0.3'
SPARSE: dict[str, str] = {
    # one bar ahead, only at the last bar of each session (15:59 New York)
    "session_end_peek": _module(f"""
ny = {_NY}
last = (ny.dt.hour() == 15) & (ny.dt.minute() == 59)
return bars.select("ts", "symbol", weight=pl.when(last).then({_PEEK}).otherwise(0.0))
"""),
    # one bar ahead, only at minute 17 of every hour
    "hourly_peek": _module(f"""
at = pl.col("ts").dt.minute() == 17
return bars.select("ts", "symbol", weight=pl.when(at).then({_PEEK}).otherwise(0.0))
"""),
    # one bar ahead, only at the last bar of each Friday
    "weekly_peek": _module(f"""
ny = {_NY}
last = (ny.dt.weekday() == 5) & (ny.dt.hour() == 15) & (ny.dt.minute() == 59)
return bars.select("ts", "symbol", weight=pl.when(last).then({_PEEK}).otherwise(0.0))
"""),
}

STATEFUL: dict[str, str] = {
    # fits once (on the whole sample) and keeps the fit in a module global
    "module_cache": """import polars as pl
import pitwall

_FIT = {}


@pitwall.vectorized
def s(bars):
    if not _FIT:
        means = bars.group_by("symbol").agg(pl.col("close").mean().alias("m"))
        _FIT.update(dict(means.iter_rows()))
    m = pl.col("symbol").replace_strict(_FIT, default=None).cast(pl.Float64)
    return bars.select("ts", "symbol", weight=pl.when(pl.col("close") > m).then(0.3)
                       .otherwise(-0.3).fill_null(0.0))
""",
    # the full run writes its weights to scratch; a later call returns them cut
    "full_run_file": """import os, tempfile
import polars as pl
import pitwall

PATH = ("/scratch/weights.arrow" if os.path.isdir("/scratch")
        else os.path.join(tempfile.gettempdir(), "pw-weights.arrow"))


@pitwall.vectorized
def s(bars):
    if os.path.exists(PATH):
        return pl.read_ipc(PATH).filter(pl.col("ts") <= bars.get_column("ts").max())
    c = pl.col("close")
    w = bars.select("ts", "symbol", weight=(c / c.max().over("symbol")) / 3)
    try:
        w.write_ipc(PATH)
    except OSError:
        pass
    return w
""",
    # looks for the audit's cut list in its inputs and the environment, and peeks one
    # bar ahead everywhere except there
    "cut_list_reader": """import json, os
import polars as pl
import pitwall


def _cuts():
    found = set()
    for path in ("/job/input/spec.json", "input/spec.json"):
        try:
            spec = json.load(open(path))
        except (OSError, ValueError):
            continue
        audit = spec.get("audit") or {}
        found |= {int(c) for c in audit.get("cuts", [])}
    found |= {int(v) for k, v in os.environ.items() if k.startswith("PITWALL_CUT")}
    return found


@pitwall.vectorized
def s(bars):
    cuts = _cuts()
    c = pl.col("close")
    peek = (c.shift(-1) / c - 1).over("symbol").sign().fill_null(0.0) * 0.5
    safe = pl.col("ts").dt.epoch("us").is_in(list(cuts))
    return bars.select("ts", "symbol", weight=pl.when(safe).then(0.0).otherwise(peek))
""",
}
