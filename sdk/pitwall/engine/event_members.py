"""A universe rule in event mode: the broker trades only the rule's members
(docs/reference-data.md §7).

The bars carry ``member`` (the rule's latest evaluation on or before each bar's day, the
same in every prefix); the strategy reads it as a field. As the vectorized engine holds
weight 0 at every bar whose symbol is not a member (the weight decided at bar ``t`` is
traded at ``t + 1``), the broker here:

* drops every order the strategy places for a symbol while it is not a member;
* when a symbol leaves (its flag turns from member to not at a bar ``c``), after the bar's
  fills drops the symbol's open orders and places its own market order closing the
  position, which fills from bar ``c + 1`` under the fill model like any order. Its id is
  negative and its trades are labelled ``universe_exit``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pitwall.engine.broker import Broker

#: The bar field that carries the membership flag (1.0 member, 0.0 not, NaN no bar).
MEMBER = "member"


class Members:
    """Who may be traded at each bar, and the bars where a symbol leaves."""

    def __init__(self, flags: npt.NDArray[np.float64]) -> None:
        """``flags``: ``(timestamps, symbols)`` of 1.0 / 0.0, NaN where there is no bar."""
        t_len = len(flags)
        # The last known flag of each symbol at each bar (NaN before its first bar).
        idx = np.where(np.isnan(flags), 0, np.arange(t_len)[:, None])
        np.maximum.accumulate(idx, axis=0, out=idx)
        known = np.take_along_axis(flags, idx, axis=0)
        #: ``outside[t, s]``: s may not be traded at bar t (orders for it are dropped).
        self.outside: npt.NDArray[np.bool_] = known == 0.0
        before = np.vstack([np.full((1, flags.shape[1]), np.nan), known[:-1]])
        leaves = (flags == 0.0) & (before == 1.0)
        self._cols: list[int] = np.flatnonzero(leaves.any(axis=1)).tolist()
        self._rows = [np.flatnonzero(leaves[c]).tolist() for c in self._cols]
        self._done = 0
        self.closed = 0  # positions the broker closed as their symbol left
        #: The next bar where a symbol leaves (``len(flags)`` when none is left).
        self.next = self._cols[0] if self._cols else t_len
        self._end = t_len

    def leave(self, broker: Broker, t: int) -> None:
        """After bar ``t``'s fills: close what is held of every symbol that left by ``t``."""
        cols, n = self._cols, len(self._cols)
        while self._done < n and cols[self._done] <= t:
            for row in self._rows[self._done]:
                self.closed += broker.close_out(row)
            self._done += 1
        self.next = cols[self._done] if self._done < n else self._end
