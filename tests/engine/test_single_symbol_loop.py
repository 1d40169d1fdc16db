"""The one-symbol accounting loop (``fills._single_loop``) is a specialisation of the
general loop (``fills._recursion_loop``) for speed (docs/benchmarks.md, official path):
on random one-symbol grids both give the same numbers bit for bit, as callers see them."""

from __future__ import annotations

import numpy as np
import pytest

from pitwall.engine import fills


def run(kernel: object, args: tuple[object, ...], t_len: int) -> tuple[object, fills.Path]:
    out = np.empty((7, t_len))
    book_gap = np.zeros(t_len - 1)
    flags = kernel(*args, out, fills._NONE_GRID, book_gap)  # type: ignore[operator]
    path = fills.Path(pre=out[0], post=out[1], close=out[2], turnover=out[3], gross=out[4],
                      net=out[5], n_trades=int(flags[0]), fee=out[6], book_gap=book_gap)
    return flags, fills._apply_ruin(path) if flags[2] else path


@pytest.mark.parametrize("seed", range(4))
def test_the_one_symbol_loop_equals_the_general_loop(seed: int) -> None:
    general, single = fills._recursion(False), fills._recursion(True)
    rng = np.random.default_rng(seed)
    for trial in range(100):
        t_len = int(rng.integers(2, 300))
        vol = rng.choice([1e-3, 0.1, 1.0])
        o = 100 * np.exp(np.cumsum(rng.normal(0, vol, t_len)))
        c = o * np.exp(rng.normal(0, vol, t_len))
        if trial % 8 == 1:
            o[rng.integers(0, t_len)] = rng.choice([np.nan, 0.0, -1.0, np.inf])
        if trial % 8 == 2:
            c[rng.integers(0, t_len)] = 1e300
        w = (rng.choice([0.0, -0.0, 1.0, -1.0, 0.5, 3.0, -7.0, 50.0, 1e-13], t_len)
             if trial % 2 else rng.normal(0, 2, t_len))
        per_cell = trial % 3 == 0
        rates = np.abs(rng.normal(0, 1e-3, (1, t_len))) if per_cell else fills._NONE_GRID
        rate = 0.0 if per_cell else float(rng.choice([0.0, 3e-4, 0.01, 0.3]))
        borrow = np.abs(rng.normal(0, 1e-4, t_len)) if trial % 4 == 0 else np.zeros(0)
        args = ((o[None, :].copy(), c[None, :].copy(), fills._NONE_MASK, w[None, :].copy(),
                 rates), rate, borrow)
        (n_a, ok_a, ruin_a), a = run(general, args, t_len)
        (n_b, ok_b, ruin_b), b = run(single, args, t_len)
        assert ok_a == ok_b, trial
        if not ok_a:
            continue  # bad prices: a DataError either way
        assert (n_a, ruin_a) == (n_b, ruin_b), trial
        for name in ("pre", "post", "close", "turnover", "gross", "net", "fee", "book_gap"):
            x, y = getattr(a, name), getattr(b, name)
            assert np.array_equal(x.view(np.int64), y.view(np.int64)), (trial, name)
