"""The simulated clock inside the sandbox (docs/architecture.md §5 determinism).

While a strategy runs, the wall-clock functions of the standard library return the run's
*simulated* time instead of the host's, so a strategy that (by mistake or on purpose)
reads "now" gets the same answer on every re-run of a manifest:

* ``time.time()``, ``time.time_ns()``, ``time.clock_gettime[_ns](CLOCK_REALTIME)``,
  and ``time.gmtime()``, ``time.localtime()``, ``time.ctime()``, ``time.strftime(fmt)``
  when called without an explicit time;
* ``datetime.datetime.now()``, ``.utcnow()``, ``.today()`` and ``datetime.date.today()``
  (``TZ=UTC`` in the sandbox, so naive "local" times are UTC).

For a vectorized run the simulated time is the ``ts`` of the last bar in the frame the
strategy was given (on a lookahead-audit re-run, the last bar before the cut).

Limits: the patch replaces module attributes, so it reaches every caller that looks them
up at call time (``time.time()``, ``datetime.datetime.now()``, and ``from datetime import
datetime`` executed *after* installation, which is the case for strategy modules). Code
that captured the originals before (``from time import time`` in a library imported
earlier) and C extensions that read the system clock directly (``clock_gettime`` from C:
``numpy.datetime64('now')``, ``pandas.Timestamp.now()``, Polars internals) still see the
real time. ``time.monotonic()``, ``time.perf_counter()`` and ``time.process_time()`` are
left real: they measure durations and do not reveal the date.

Example
-------
>>> import datetime as dt, time
>>> clock = SimulatedClock()
>>> clock.install()
>>> clock.set(dt.datetime(2024, 3, 15, 20, 59, tzinfo=dt.UTC))
>>> time.time() == dt.datetime(2024, 3, 15, 20, 59, tzinfo=dt.UTC).timestamp()
True
>>> str(dt.date.today())
'2024-03-15'
>>> clock.uninstall()
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from collections.abc import Callable
from typing import Any

_REAL_DATETIME = _dt.datetime
_REAL_DATE = _dt.date
_EPOCH = _REAL_DATETIME(1970, 1, 1, tzinfo=_dt.UTC)


def _local_naive(utc: _dt.datetime) -> _dt.datetime:
    """A naive local time, as ``datetime.now()`` gives (UTC in the sandbox, ``TZ=UTC``)."""
    return utc.astimezone().replace(tzinfo=None)


class _RealTypeCheck(type):
    """``isinstance(real_datetime, patched_datetime)`` stays True (values from Polars…)."""

    real: type

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls.real)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls.real)


class SimulatedClock:
    """Patches ``time`` and ``datetime`` to a settable simulated instant (see module doc)."""

    def __init__(self) -> None:
        self._now_ns = 0
        self._saved: dict[tuple[Any, str], Any] = {}

    @property
    def installed(self) -> bool:
        """Whether the patch is in place."""
        return bool(self._saved)

    def set(self, now: _dt.datetime) -> None:
        """Make ``now`` (time-zone aware) the current time of the patched functions."""
        if now.tzinfo is None:
            raise ValueError("the simulated time must be time-zone aware (UTC)")
        delta = now - _EPOCH
        self._now_ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000

    def now_ns(self) -> int:
        """The simulated time in nanoseconds since the epoch."""
        return self._now_ns

    def now_utc(self) -> _dt.datetime:
        """The simulated time as an aware UTC datetime (a real ``datetime`` instance)."""
        return _EPOCH + _dt.timedelta(microseconds=self._now_ns // 1000)

    def install(self) -> None:
        """Replace the clock functions; idempotent."""
        if self.installed:
            return
        for owner, name, value in self._replacements():
            self._saved[(owner, name)] = getattr(owner, name)
            setattr(owner, name, value)

    def uninstall(self) -> None:
        """Put the real clock functions back."""
        for (owner, name), value in self._saved.items():
            setattr(owner, name, value)
        self._saved.clear()

    def _replacements(self) -> list[tuple[Any, str, Any]]:
        real = {name: getattr(_time, name) for name in
                ("gmtime", "localtime", "ctime", "strftime", "clock_gettime",
                 "clock_gettime_ns")}
        now_s: Callable[[], float] = lambda: self._now_ns / 1e9  # noqa: E731
        realtime = _time.CLOCK_REALTIME

        def clock_gettime(clk_id: int) -> float:
            return now_s() if clk_id == realtime else float(real["clock_gettime"](clk_id))

        def clock_gettime_ns(clk_id: int) -> int:
            return self._now_ns if clk_id == realtime else int(real["clock_gettime_ns"](clk_id))

        def at(fn: Callable[..., Any]) -> Callable[..., Any]:
            return lambda secs=None: fn(now_s() if secs is None else secs)

        def strftime(fmt: str, t: Any = None) -> str:
            return str(real["strftime"](fmt, real["localtime"](now_s()) if t is None else t))

        return [
            (_time, "time", now_s),
            (_time, "time_ns", lambda: self._now_ns),
            (_time, "clock_gettime", clock_gettime),
            (_time, "clock_gettime_ns", clock_gettime_ns),
            (_time, "gmtime", at(real["gmtime"])),
            (_time, "localtime", at(real["localtime"])),
            (_time, "ctime", at(real["ctime"])),
            (_time, "strftime", strftime),
            (_dt, "datetime", self._datetime_class()),
            (_dt, "date", self._date_class()),
        ]

    def _datetime_class(self) -> type:
        clock = self

        class datetime(_REAL_DATETIME, metaclass=_RealTypeCheck):
            real = _REAL_DATETIME

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                # Hand out real instances: Polars, NumPy and pickle know only the real type.
                return _REAL_DATETIME(*args, **kwargs)

            @classmethod
            def now(cls, tz: _dt.tzinfo | None = None) -> Any:
                utc = clock.now_utc()
                return utc.astimezone(tz) if tz is not None else _local_naive(utc)

            @classmethod
            def utcnow(cls) -> Any:
                return clock.now_utc().replace(tzinfo=None)

            @classmethod
            def today(cls) -> Any:
                return _local_naive(clock.now_utc())

        return datetime

    def _date_class(self) -> type:
        clock = self

        class date(_REAL_DATE, metaclass=_RealTypeCheck):
            real = _REAL_DATE

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                return _REAL_DATE(*args, **kwargs)

            @classmethod
            def today(cls) -> Any:
                return _local_naive(clock.now_utc()).date()

        return date
