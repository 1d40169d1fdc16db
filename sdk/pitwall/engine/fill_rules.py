"""The liquidity rules of a fill, one implementation for both engines.

A fill of ``want`` shares of one symbol on one bar (``docs/engine-conventions.md`` §2.3):

1. **participation cap**: at most ``floor(participation · volume)`` shares of the bar's
   volume per symbol (shared by a symbol's orders in event mode); the rest carries;
2. **lots**: the size is rounded down to a multiple of ``lot_size`` shares;
3. **minimum**: a fill worth less than ``min_trade_notional`` is not made;
4. **impact**: the fill pays ``Y · σ · √(|q| / volume)`` of its notional, with ``σ`` the
   bar's volatility from its range (Parkinson) and ``Y`` the impact coefficient.

The functions are scalar and plain: the event broker calls them per order, and the
vectorized engine's compiled pass (:mod:`pitwall.engine.liquidity`) compiles these same
functions into its loop, so both run one implementation of the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pitwall.models import Costs, Execution

# A size within this relative distance under a whole number of lots is that number of
# lots: weights converted to shares carry float noise (250 shares can come out 249.99…).
_LOT_SLACK = 1e-9
# Parkinson (1980): E[ln(high/low)²] = 4·ln 2·σ² for a Brownian bar.
_PARKINSON = 2.0 * math.sqrt(math.log(2.0))


@dataclass(frozen=True)
class FillRules:
    """The fill model's settings; all off by default (every fill as asked, no impact)."""

    participation: float | None = None  # max fraction of a bar's volume per symbol
    lot_size: float | None = None  # shares; None: fractional shares
    min_trade_notional: float = 0.0  # currency; 0: any size
    impact_coefficient: float = 0.0  # Y of the square-root law; 0: no impact

    def __post_init__(self) -> None:
        if self.participation is not None and not 0 < self.participation <= 1:
            raise ValueError("participation must be in (0, 1], or None for no volume cap")
        if self.lot_size is not None and not 0 < self.lot_size < math.inf:
            raise ValueError("lot_size must be a positive number of shares, or None")
        if not 0 <= self.min_trade_notional < math.inf:
            raise ValueError("min_trade_notional must be a non-negative amount")
        if not 0 <= self.impact_coefficient < math.inf:
            raise ValueError("impact_coefficient must be a non-negative number (of order 1)")

    @classmethod
    def from_spec(cls, costs: Costs, execution: Execution) -> FillRules:
        """From a spec's :class:`~pitwall.models.Costs` and :class:`~pitwall.models.Execution`."""
        return cls(participation=execution.participation, lot_size=execution.lot_size,
                   min_trade_notional=execution.min_trade_notional,
                   impact_coefficient=costs.impact_coefficient)

    @property
    def active(self) -> bool:
        """Whether any rule can change a fill (otherwise the plain engine applies)."""
        return (self.participation is not None or self.lot_size is not None
                or self.min_trade_notional > 0 or self.impact_coefficient > 0)

    def scalars(self) -> tuple[float, float, float, float, bool]:
        """``(participation, lot, minimum, coefficient, needs_volume)``, 0 for "off"."""
        return (self.participation or 0.0, self.lot_size or 0.0, self.min_trade_notional,
                self.impact_coefficient, self.needs_volume)

    @property
    def needs_volume(self) -> bool:
        """The cap and the impact read the bar's volume."""
        return self.participation is not None or self.impact_coefficient > 0


@dataclass
class LiquidityStats:
    """What the fill model did over a run (reported by both engines).

    ``capped_fills``: fills cut by the participation cap; ``carried_notional``: the
    currency left unfilled by those cuts, summed over the bars it was carried from;
    ``carried_bars``: bars on which some symbol's trade was cut; ``skipped_trades``:
    wanted trades not made because they were under one lot or under the minimum notional;
    ``impact_cost``: currency paid as market impact.
    """

    capped_fills: int = 0
    carried_notional: float = 0.0
    carried_bars: int = 0
    skipped_trades: int = 0
    impact_cost: float = 0.0


def participation_room(volume: float, participation: float, needs_volume: bool) -> float:
    """Shares the cap lets a symbol trade on a bar: ``floor(p · volume)``, inf without one
    (``participation`` 0). A bar without a volume (0, NaN, inf) has no room when the cap
    or the impact reads it (``needs_volume``)."""
    if not needs_volume:
        return math.inf
    v = volume if 0 < volume < math.inf else 0.0  # False for NaN
    if participation <= 0:
        return math.inf if v > 0 else 0.0
    return float(math.floor(participation * v))


def fill_size(want: float, room: float, price: float, lot: float, minimum: float) -> float:
    """The shares (≥ 0) filled of ``|want|``: capped by ``room``, rounded down to ``lot``
    (0: fractional), 0 if worth less than ``minimum`` at ``price``."""
    size = min(abs(want), room)
    if lot > 0:
        size = math.floor(size / lot * (1.0 + _LOT_SLACK)) * lot
    if minimum > 0 and size * price < minimum:
        size = 0.0
    return size


def bar_sigma(high: float, low: float) -> float:
    """The bar's volatility from its range, ``ln(high/low) / (2·√ln 2)`` (Parkinson);
    0 where the range is missing or not positive."""
    if not (low > 0 and high >= low and high < math.inf):  # False for NaN
        return 0.0
    return math.log(high / low) / _PARKINSON


def impact_fraction(size: float, volume: float, sigma: float, coefficient: float) -> float:
    """The square-root impact, a fraction of the fill's notional: ``Y·σ·√(size/volume)``.

    0 for an empty fill; a bar without volume has no room (:func:`participation_room`),
    so a fill never meets ``volume = 0`` here.
    """
    if coefficient == 0 or not size > 0:
        return 0.0
    return coefficient * sigma * math.sqrt(size / volume)
