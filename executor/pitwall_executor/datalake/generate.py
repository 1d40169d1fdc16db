"""Deterministic synthetic 1-minute OHLCV bars for US equities (docs/architecture.md §6).

Sessions follow the NYSE calendar (``market_calendar``): no bars on holidays and closures,
and an early close ends the day's bars at 13:00 New York. The model, per minute ``t`` of a
session and symbol ``i``::

    r[i, t] = mu_i + beta_i * f[t] + sigma_i * u(t) * z[i, t]

where ``f`` is a market factor shared by every symbol (so symbols correlate), ``u`` is the
intraday U-shape of volatility, and each session opens with an overnight gap. Volume
follows its own U-shape and rises with the size of the minute's move.

Determinism is by construction, not by call order: every random stream is seeded from a
SHA-256 of (seed, what it is for), never from Python's salted ``hash()``. The market factor
of a day depends only on (seed, date); a symbol's profile only on (seed, symbol); a
symbol's shocks of a month only on (seed, symbol, month). So adding symbols does not change
the existing ones, and the same call always yields the same frames. (The streams are those
of numpy's PCG64 and normal/exponential samplers; a numpy release that changed them would
change the data, which the catalog would then see as new bytes.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from pitwall_executor.datalake.generate_events import DayEffects, EventRun
from pitwall_executor.datalake.generate_events import seeded_rng as _rng
from pitwall_executor.datalake.market_calendar import (
    SESSION_MINUTES,
    session_bounds_us,
    trading_days,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

# Bump when the model changes so catalogs regenerate instead of reusing stale data.
# 2: sessions follow the NYSE calendar (early closes end at 13:00, fewer bars).
GENERATOR_VERSION = 2

BARS_SCHEMA = pl.Schema(
    {
        "ts": pl.Datetime("us", "UTC"),
        "symbol": pl.String(),
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Int64(),
    }
)

_MINUTES_PER_YEAR = 252 * SESSION_MINUTES
_MARKET_VOL = 0.18  # annualised volatility of the intraday market factor
_OVERNIGHT_SHARE = 0.35  # overnight gap sd as a fraction of a day's intraday sd
_TICK = 0.01

# Liquid, well-known US tickers first, so small samples look familiar.
_TICKERS = (
    "AAPL", "MSFT", "AMZN", "GOOG", "META", "NVDA", "TSLA", "JPM", "JNJ", "V", "PG", "UNH",
    "HD", "MA", "XOM", "CVX", "ABBV", "PFE", "KO", "PEP", "MRK", "BAC", "WMT", "COST", "DIS",
    "CSCO", "ADBE", "CRM", "NFLX", "INTC", "AMD", "ORCL", "QCOM", "TXN", "AVGO", "IBM", "ACN",
    "NKE", "MCD", "SBUX", "T", "VZ", "CMCSA", "TMUS", "WFC", "C", "GS", "MS", "AXP", "BLK",
    "SCHW", "BA", "CAT", "DE", "HON", "GE", "MMM", "LMT", "RTX", "UPS", "FDX", "UNP", "CSX",
    "LOW", "TGT", "LLY", "BMY", "AMGN", "GILD", "ABT", "TMO", "DHR", "MDT", "CVS", "CI", "HUM",
    "ISRG", "SYK", "ZTS", "COP", "SLB", "EOG", "OXY", "PSX", "NEE", "DUK", "SO", "AMT", "PLD",
    "SPG", "CCI", "EQIX", "LIN", "APD", "SHW", "ECL", "NEM", "FCX", "PYPL", "INTU",
)  # fmt: skip


def sample_symbols(n: int) -> list[str]:
    """The first ``n`` symbols of the synthetic universe.

    The first 100 are real-looking US tickers; beyond them names are ``S0001``, ``S0002``…

    Examples
    --------
    >>> sample_symbols(3)
    ['AAPL', 'MSFT', 'AMZN']
    >>> sample_symbols(102)[-2:]
    ['S0001', 'S0002']
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    extra = [f"S{i:04d}" for i in range(1, n - len(_TICKERS) + 1)]
    return [*_TICKERS[:n], *extra]


@dataclasses.dataclass(frozen=True)
class SymbolProfile:
    """The fixed character of one synthetic symbol (annualised figures)."""

    beta: float
    idio_vol: float
    drift: float
    price0: float
    volume0: float  # mean shares per minute

    @classmethod
    def draw(cls, seed: int, symbol: str) -> SymbolProfile:
        """The profile of ``symbol`` under ``seed``; independent of any other symbol."""
        rng = _rng("profile", seed, symbol)
        return cls(
            beta=float(rng.uniform(0.6, 1.5)),
            idio_vol=float(rng.uniform(0.12, 0.35)),
            drift=float(rng.uniform(-0.05, 0.15)),
            price0=float(np.exp(rng.uniform(np.log(15.0), np.log(600.0)))),
            volume0=float(np.exp(rng.uniform(np.log(500.0), np.log(50_000.0)))),
        )


def _u_shape(n: int, first: float, last: float, base: float, k_open: float,
             k_close: float) -> FloatArray:
    """A curve over the ``n`` minutes of a session, high at the open and the close."""
    m = np.arange(n, dtype=np.float64)
    return base + first * np.exp(-m / k_open) + last * np.exp(-(n - 1 - m) / k_close)


@functools.cache
def _shapes(minutes: int) -> tuple[FloatArray, FloatArray]:
    """Volatility and volume shapes of a session of ``minutes`` minutes.

    Volatility is scaled so its mean square is 1 (a full session's variance stays as
    annualised), volume to mean 1 with the closing auction in the last minute; an early
    close gets the whole U squeezed into its shorter day. Both are padded with ones to
    ``SESSION_MINUTES``: past the close, where returns are masked to zero and nothing is
    written, so every array keeps one shape and the random streams stay those of a full day.
    """
    vol = _u_shape(minutes, 1.6, 0.7, 0.75, 20.0, 25.0)
    vol /= np.sqrt(np.mean(vol**2))
    volume = _u_shape(minutes, 2.5, 2.0, 0.6, 25.0, 20.0)
    volume[-1] *= 3.0
    volume /= volume.mean()
    pad = np.ones(SESSION_MINUTES - minutes)
    shapes = np.concatenate([vol, pad]), np.concatenate([volume, pad])
    for shape in shapes:
        shape.setflags(write=False)  # shared by every call (cached)
    return shapes


@dataclasses.dataclass(frozen=True)
class _Sessions:
    """The sessions of a block of days (docs/architecture.md §6): opens, and minute shapes."""

    days: list[dt.date]
    opens: NDArray[np.int64]  # epoch µs UTC
    live: NDArray[np.bool_]  # (days, SESSION_MINUTES): whether the minute is in the session
    vol: FloatArray  # (days, SESSION_MINUTES)
    volume: FloatArray

    @classmethod
    def of(cls, days: list[dt.date]) -> _Sessions:
        opens, closes = session_bounds_us(days)
        minutes = (closes - opens) // 60_000_000
        shapes = [_shapes(int(n)) for n in minutes]
        live = np.arange(SESSION_MINUTES)[None, :] < minutes[:, None]
        return cls(days, opens, live, np.array([v for v, _ in shapes]),
                   np.array([v for _, v in shapes]))

    def timestamps(self) -> NDArray[np.int64]:
        """Epoch microseconds (UTC) of every session minute, day by day, flattened."""
        minutes = np.arange(SESSION_MINUTES, dtype=np.int64) * 60_000_000
        return (self.opens[:, None] + minutes[None, :])[self.live]


@dataclasses.dataclass(frozen=True)
class _Market:
    """The market factor of a block of days: minute returns, gaps, day volatility."""

    minute: FloatArray  # (days, minutes)
    overnight: FloatArray  # (days,)
    day_vol: FloatArray  # (days,) multiplier, mean ~1

    @classmethod
    def draw(cls, seed: int, sessions: _Sessions) -> _Market:
        minute_sd = _MARKET_VOL / np.sqrt(_MINUTES_PER_YEAR)
        minute, overnight, day_vol = [], [], []
        for day, shape in zip(sessions.days, sessions.vol, strict=True):
            rng = _rng("market", seed, day.isoformat())
            vol = float(np.exp(0.25 * rng.standard_normal() - 0.25**2 / 2))  # vol clustering
            minute.append(minute_sd * vol * shape * rng.standard_normal(SESSION_MINUTES))
            overnight.append(
                _OVERNIGHT_SHARE * minute_sd * np.sqrt(SESSION_MINUTES) * rng.standard_normal()
            )
            day_vol.append(vol)
        return cls(np.array(minute), np.array(overnight), np.array(day_vol))


@dataclasses.dataclass(frozen=True)
class _Shocks:
    """Idiosyncratic draws of all symbols for a block of days, stacked (symbols, days, …)."""

    z: FloatArray  # minute shocks
    gap: FloatArray  # overnight shocks (symbols, days)
    wick_hi: FloatArray  # how far high/low reach beyond the body, in minute sds
    wick_lo: FloatArray
    volume: FloatArray  # minute volume noise
    volume_day: FloatArray  # day-level volume noise (symbols, days)

    @classmethod
    def draw(cls, seed: int, symbols: Sequence[str], month: str, n_days: int) -> _Shocks:
        shape = (n_days, SESSION_MINUTES)
        draws: dict[str, list[FloatArray]] = {f.name: [] for f in dataclasses.fields(cls)}
        for symbol in symbols:
            # One stream per (symbol, month): independent of the other symbols and of how
            # the range is chunked, so months are reproducible on their own.
            rng = _rng("bars", seed, symbol, month)
            draws["z"].append(rng.standard_normal(shape))
            draws["gap"].append(rng.standard_normal(n_days))
            draws["wick_hi"].append(rng.exponential(0.5, shape))
            draws["wick_lo"].append(rng.exponential(0.5, shape))
            draws["volume"].append(rng.standard_normal(shape))
            draws["volume_day"].append(rng.standard_normal(n_days))
        return cls(**{k: np.array(v) for k, v in draws.items()})


def _month_blocks(days: list[dt.date]) -> Iterator[list[dt.date]]:
    """Split ordered days into runs of the same calendar month."""
    block: list[dt.date] = []
    for day in days:
        if block and (day.year, day.month) != (block[0].year, block[0].month):
            yield block
            block = []
        block.append(day)
    if block:
        yield block


def _to_price(log_price: FloatArray) -> FloatArray:
    # Rounding and clipping are monotone, so they keep low <= open, close <= high.
    return np.maximum(np.round(np.exp(log_price), 2), _TICK)


class _Simulator:
    """Carries each symbol's last close across month blocks so prices are continuous.

    With ``events`` (``generate_events``) the bars become those of listed securities with
    corporate actions: the economic path is drawn exactly as without, then turned into
    unadjusted prices and cut to each symbol's listed days.
    """

    def __init__(self, symbols: Sequence[str], seed: int, events: EventRun | None = None) -> None:
        self.symbols = list(symbols)
        self.seed = seed
        self.events = events
        self.last_raw_close = np.full(len(self.symbols), np.nan)
        profiles = [SymbolProfile.draw(seed, s) for s in self.symbols]

        def column(name: str) -> FloatArray:
            return np.array([getattr(p, name) for p in profiles])[:, None, None]

        self.beta, self.idio_vol = column("beta"), column("idio_vol")
        self.drift, self.volume0 = column("drift"), column("volume0")
        self.last_log_close = np.log(column("price0"))[:, 0, 0]

    def month(self, days: list[dt.date], first_index: int = 0) -> pl.DataFrame:
        """Bars of every symbol over ``days`` (one calendar month), sorted (symbol, ts).

        ``first_index`` is the index of ``days[0]`` among the range's trading days (what
        the events are scheduled by).
        """
        n_sym, n_days = len(self.symbols), len(days)
        sessions = _Sessions.of(days)
        market = _Market.draw(self.seed, sessions)
        shocks = _Shocks.draw(self.seed, self.symbols, f"{days[0]:%Y-%m}", n_days)
        idio_sd = self.idio_vol / np.sqrt(_MINUTES_PER_YEAR) * market.day_vol[None, :, None]
        returns = (
            self.drift / _MINUTES_PER_YEAR
            + self.beta * market.minute[None]
            + idio_sd * sessions.vol * shocks.z
        ) * sessions.live  # nothing moves after an early close: the close carries over
        effects = None
        if self.events is not None:
            index = np.arange(first_index, first_index + n_days, dtype=np.int64)
            effects = DayEffects([self.events.events[s] for s in self.symbols], index)
            per_day = sessions.live.sum(axis=1)
            returns += (effects.decline / per_day)[:, :, None] * sessions.live
        gap_sd = _OVERNIGHT_SHARE * self.idio_vol[:, :, 0] * np.sqrt(1 / 252)
        gaps = self.beta[:, :, 0] * market.overnight[None] + gap_sd * shocks.gap
        steps = returns.copy()
        steps[:, :, 0] += gaps  # the session's first bar opens away from the last close
        log_close = self.last_log_close[:, None] + np.cumsum(steps.reshape(n_sym, -1), axis=1)
        log_close = log_close.reshape(returns.shape)
        self.last_log_close = log_close[:, -1, -1].copy()
        log_open = log_close - returns  # previous close, or previous close + gap at the open
        minute_sd = np.sqrt((self.beta * _MARKET_VOL) ** 2 + self.idio_vol**2)
        minute_sd = minute_sd / np.sqrt(_MINUTES_PER_YEAR) * sessions.vol
        body_hi, body_lo = np.maximum(log_open, log_close), np.minimum(log_open, log_close)
        log_high = body_hi + minute_sd * shocks.wick_hi
        log_low = body_lo - minute_sd * shocks.wick_lo
        # Volume: U-shaped, noisy, and larger on big moves (activity drives volatility).
        activity = 1.0 + 0.6 * np.abs(returns) / minute_sd
        volume = (
            self.volume0
            * sessions.volume
            * np.exp(0.3 * shocks.volume_day[:, :, None] + 0.4 * shocks.volume - 0.125)
            * activity
        )
        logs = {"open": log_open, "high": log_high, "low": log_low, "close": log_close}
        if effects is None:
            return self._frame(sessions, logs, volume)
        return self._listed(sessions, logs, volume, effects, first_index)

    def _listed(self, sessions: _Sessions, logs: dict[str, FloatArray], volume: FloatArray,
                effects: DayEffects, first_index: int) -> pl.DataFrame:
        """The bars as traded: unadjusted prices and volumes, listed days, current symbols."""
        assert self.events is not None
        offset = effects.log_offset[:, :, None]
        raw = {name: log + offset for name, log in logs.items()}
        # Price each dividend from the last close before its ex-date (unadjusted).
        day_close = _to_price(raw["close"][:, :, -1])  # returns stop after the close
        prev = np.concatenate([self.last_raw_close[:, None], day_close[:, :-1]], axis=1)
        for i, symbol in enumerate(self.symbols):
            for action in self.events.events[symbol].actions:
                d = action.effective - first_index
                # A dividend is effective after the first listed day: a close precedes it.
                if action.kind == "dividend" and 0 <= d < len(sessions.days) \
                        and np.isfinite(prev[i, d]):
                    assert action.dividend_yield is not None
                    self.events.amounts[(symbol, action.effective)] = round(
                        float(action.dividend_yield * prev[i, d]), 4)
        self.last_raw_close = np.where(effects.live[:, -1], day_close[:, -1], np.nan)
        frame = self._frame(sessions, raw, volume * np.exp(effects.log_shares)[:, :, None])
        per_day = sessions.live.sum(axis=1)
        keep = np.repeat(effects.live, per_day, axis=1).ravel()
        renamed = np.repeat(effects.renamed, per_day, axis=1).ravel()
        names = [getattr(self.events.events[s].rename(), "new_symbol", None) or s
                 for s in self.symbols]
        new_names = pl.Series(np.repeat(names, int(per_day.sum())), dtype=pl.String)
        return (frame.with_columns(pl.when(pl.Series(renamed)).then(new_names)
                                   .otherwise(pl.col("symbol")).alias("symbol"))
                .filter(pl.Series(keep)))

    def _frame(
        self, sessions: _Sessions, logs: dict[str, FloatArray], volume: FloatArray
    ) -> pl.DataFrame:
        """The session minutes of (symbols, days, minutes) arrays as a bars frame,
        symbol-major."""
        n_sym, live = len(self.symbols), sessions.live
        ts = np.tile(sessions.timestamps(), n_sym)
        per_symbol = int(live.sum())
        index = pl.Series(np.repeat(np.arange(n_sym, dtype=np.uint32), per_symbol))
        return pl.DataFrame(
            {
                "ts": pl.Series(ts).cast(BARS_SCHEMA["ts"]),
                "symbol": pl.Series(self.symbols, dtype=pl.String).gather(index),
                **{name: _to_price(log[:, live]).ravel() for name, log in logs.items()},
                "volume": np.maximum(np.round(volume[:, live]), 1).astype(np.int64).ravel(),
            },
            schema=BARS_SCHEMA,
        )


def generate_bars(
    symbols: Sequence[str], start: dt.date, end: dt.date, *, seed: int
) -> Iterator[pl.DataFrame]:
    """Synthetic 1-minute bars of ``symbols`` over ``[start, end]``, one frame per month.

    Each frame holds one calendar month (months without a trading day are skipped), is
    sorted by ``(symbol, ts)`` and has exactly :data:`BARS_SCHEMA`. Memory is bounded by
    one month of all symbols; prices continue across months.

    Parameters
    ----------
    symbols
        Distinct symbol names, in any order (output is sorted).
    start, end
        First and last calendar day, both inclusive.
    seed
        Seed of every random stream; same arguments give identical frames.

    Examples
    --------
    >>> frames = generate_bars(["AAPL", "MSFT"], dt.date(2024, 1, 2), dt.date(2024, 1, 3), seed=7)
    >>> next(frames).shape
    (1560, 7)
    """
    for chunks in generate_month_chunks(symbols, start, end, seed=seed, chunk_symbols=None):
        yield pl.concat(list(chunks), rechunk=True)


def generate_month_chunks(
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    seed: int,
    chunk_symbols: int | None = 256,
    events: EventRun | None = None,
) -> Iterator[Iterator[pl.DataFrame]]:
    """Like :func:`generate_bars`, but each month comes as frames of ``chunk_symbols`` symbols.

    Memory is bounded by one month of ``chunk_symbols`` symbols (about 1.8 MB per symbol),
    whatever the universe size, so 100M+ rows stream through a small heap. Concatenating a
    month's chunks gives exactly the frame :func:`generate_bars` yields (every random stream
    depends on one symbol or one day, never on its neighbours). Consume each month's chunks
    before asking for the next month.

    With ``events`` (see ``generate_events``) the bars carry listings and corporate
    actions, and each month comes as one frame sorted by (symbol, ts): a rename moves a
    symbol's rows out of its chunk's order, so memory is then one month of every symbol.

    Examples
    --------
    >>> months = generate_month_chunks(["A", "B", "C"], dt.date(2024, 1, 2), dt.date(2024, 1, 2),
    ...                                seed=7, chunk_symbols=2)
    >>> [c.height for c in next(months)]
    [780, 390]
    """
    if not symbols:
        raise ValueError("symbols is empty; pass at least one symbol, e.g. sample_symbols(10)")
    if len(set(symbols)) != len(symbols):
        raise ValueError("symbols lists a name twice; list each symbol once")
    if end < start:
        raise ValueError(f"end {end} is before start {start}; swap them")
    if chunk_symbols is not None and chunk_symbols < 1:
        raise ValueError(f"chunk_symbols must be >= 1, got {chunk_symbols}")
    ordered = sorted(symbols)
    size = chunk_symbols or len(ordered)
    simulators = [_Simulator(ordered[i : i + size], seed, events)
                  for i in range(0, len(ordered), size)]
    first = 0
    for block in _month_blocks(trading_days(start, end)):
        if events is None:
            yield (sim.month(block) for sim in simulators)
        else:
            month = pl.concat([sim.month(block, first) for sim in simulators])
            yield iter([month.sort("symbol", "ts")])
        first += len(block)
