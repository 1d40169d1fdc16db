"""The recursion with a rebalance threshold: a bar-by-bar pass, exact but sequential.

With a threshold ``θ`` a symbol is traded at bar ``t`` only if its drifted weight is at
least ``θ`` away from its target, ``|aᵢ(t) − dᵢ(t)| ≥ θ`` (both of the equity at the open,
before costs). An untraded symbol keeps its value, so it holds ``dᵢ/k`` of the post-cost
equity. Whether a symbol trades now depends on how far it drifted since it last traded,
which depends on the whole path of the book: the bars are no longer independent given
the targets, so the constant-mix cumulative product does not apply. This module runs
the same equations as :mod:`pitwall.engine.fills` one bar at a time, vectorized across
symbols (cost: a few tens of µs per bar, whatever the number of symbols).
"""

from __future__ import annotations

import numpy as np

from pitwall.engine.fills import FloatArray, Path, Rate, _apply_ruin, keep_fraction
from pitwall.engine.grid import BarGrid, FloatGrid


def simulate_threshold(
    grid: BarGrid,
    target: FloatGrid,
    *,
    rate: Rate,
    borrow: FloatArray | None,
    threshold: float,
) -> Path:
    """Run the bar-by-bar recursion with a rebalance threshold (module docstring)."""
    n, t_len = grid.shape
    m = t_len - 1
    opens = np.where(np.isnan(grid.open), 1.0, grid.open)
    closes = np.where(np.isnan(grid.close), 1.0, grid.close)
    out = {name: np.zeros(m) for name in
           ("pre", "post", "close", "turnover", "gross", "net", "fee", "book_gap")}
    held, trades = np.zeros((n, m)), np.zeros((n, m))
    h, post, n_trades = np.zeros(n), 1.0, 0
    for j in range(m):
        t = j + 1
        if j == 0:
            d, pre = np.zeros(n), 1.0
        else:
            g = opens[:, t] / opens[:, t - 1]
            gap = float(h @ g - h.sum())
            if borrow is not None:
                gap -= float(borrow[t - 1]) * float(np.maximum(-h, 0.0).sum())
            out["book_gap"][j - 1] = gap
            pre = post * (1.0 + gap)
            if not pre > 0:
                break
            d = h * g / (1.0 + gap)
        a = target[:, t - 1]
        move = grid.present[:, t] & (np.abs(a - d) >= threshold) & (a != d)
        a_move = np.where(move, a, 0.0)[:, None]
        cell_rate = rate if isinstance(rate, float) else rate[:, t : t + 1]
        keep, turnover, traded, fee = keep_fraction(
            a_move, np.where(move, a - d, 0.0)[:, None], cell_rate
        )
        k = float(keep[0])
        post = pre * k
        if not post > 0:
            break
        h = np.where(move, a * k, d) / k
        trades[:, j] = np.where(move, a * k - d, 0.0)
        held[:, j] = h
        intrabar = closes[:, t] / opens[:, t]
        book_bar = float(h @ intrabar - h.sum())
        n_trades += traded
        out["pre"][j], out["post"][j] = pre, post
        out["close"][j] = post * (1.0 + book_bar)
        out["turnover"][j], out["fee"][j] = turnover[0], fee[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["gross"][j] = float(np.abs(h) @ intrabar) / (1.0 + book_bar)
            out["net"][j] = float(h @ intrabar) / (1.0 + book_bar)
    cash, zero = np.ones(1), np.zeros(1)
    return _apply_ruin(
        Path(
            pre=np.concatenate((cash, out["pre"])),
            post=np.concatenate((cash, out["post"])),
            close=np.concatenate((cash, out["close"])),
            turnover=np.concatenate((zero, out["turnover"])),
            gross=np.concatenate((zero, out["gross"])),
            net=np.concatenate((zero, out["net"])),
            n_trades=n_trades,
            fee=np.concatenate((zero, out["fee"])),
            held=held,
            book_gap=out["book_gap"],
            trades=trades,
        )
    )
