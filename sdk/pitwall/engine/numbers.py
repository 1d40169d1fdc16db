"""Numbers as the report and the CLI show them: short whatever their size (no 300-digit
CAGR), NaN and infinities spelled out."""

from __future__ import annotations

import math

#: Beyond this magnitude a ratio, a multiple or a percentage is shown as a bound: digits
#: past it say nothing a reader can use (a CAGR of 1.7e20 % is a broken run, not a number).
ABSURD = 1e6


def format_number(value: float | int | None, kind: str = "ratio") -> str:
    """One metric value as text that stays short whatever the number is.

    ``kind``: ``"pct"`` (a fraction shown as a percentage), ``"spct"`` (signed percentage),
    ``"ratio"`` (3 decimals), ``"x"`` (a multiple, e.g. turnover), ``"money"`` (2 decimals
    with thousands separators), ``"int"``, ``"days"``. None is ``"–"``; NaN and infinities
    are ``"nan"``, ``"inf"`` and ``"-inf"``; a magnitude past :data:`ABSURD` (in the unit
    shown) is ``">1e6 %"``, ``"<-1e6"`` and the like, never a 300-digit string.
    """
    if value is None:
        return "–"
    number = float(value)
    if not math.isfinite(number):
        return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
    if kind in ("money", "int", "days"):
        return _plain(number, kind)
    unit = {"pct": " %", "spct": " %", "x": "x"}.get(kind, "")
    shown = number * 100 if kind in ("pct", "spct") else number
    if abs(shown) > ABSURD:
        return (">" if shown > 0 else "<-") + f"1e6{unit}"
    return _FORMATS.get(kind, "{:.3f}").format(shown)


_FORMATS = {"pct": "{:.2f}%", "spct": "{:+.2f}%", "x": "{:.2f}x", "ratio": "{:.3f}"}


def _plain(number: float, kind: str) -> str:
    """Money and counts: every digit while they are ordinary, scientific past 1e15."""
    if abs(number) >= 1e15:
        return f"{number:.3e}"
    if kind == "money":
        return f"{number:,.2f}"
    return str(int(number)) if number.is_integer() else f"{number:g}"
