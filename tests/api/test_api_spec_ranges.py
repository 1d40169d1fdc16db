"""Dates and numbers the platform cannot use are a 400 that says what to do, never a 500."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from apikit import SYMBOLS, Api, spec_json

from pitwall_executor.datalake.catalog import Catalog
from pitwall_executor.datalake.planner import load_bars, validate_request

RANGE = "1900-01-01 to 2200-12-31"
CASES = [
    # (what, spec, field, words in the message)
    ("end at the end of time", spec_json(end="9999-12-31"), "spec.end", RANGE),
    ("start at year one", spec_json(start="0001-01-01"), "spec.start", RANGE),
    ("both out of range", spec_json(start="0001-01-01", end="9999-12-31"), "spec.end", RANGE),
    ("NaN capital", spec_json().replace('"end"', '"capital": NaN, "end"'), "spec.capital",
     "capital must be a finite number of dollars, e.g. 1000000"),
    ("'Infinity' capital", spec_json(capital="Infinity"), "spec.capital",
     "capital must be a finite number of dollars"),
    ("NaN cost", spec_json().replace('"end"', '"costs": {"slippage_bps": NaN}, "end"'),
     "spec.costs.slippage_bps", "slippage_bps must be a finite number of basis points"),
    ("NaN parameter", spec_json().replace('"end"', '"params": {"band": [1, NaN]}, "end"'),
     "spec.params", "parameter 'band' must hold finite numbers"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_unusable_dates_and_numbers_are_a_400_naming_the_field(
        api: Api, case: tuple[str, str, str, str]) -> None:
    _what, spec, field, words = case
    before = api.files()
    res = api.submit(spec=spec)
    assert res.status_code == 400, res.text
    body = res.json()
    assert body["error"] == "invalid_spec"
    assert words in body["message"], body
    assert field in {f["field"] for f in body["fields"]}, body
    assert api.counts() == (0, 0)
    assert api.files() == before


def test_the_planner_takes_the_extreme_dates_too(lake: Path) -> None:
    # A spec made without validation (or a future wider range) must not overflow a bound.
    catalog = Catalog(lake)
    snapshot = catalog.snapshot("sample")
    files = validate_request(snapshot, SYMBOLS, dt.date.min, dt.date.max)
    assert files == list(snapshot.files)
    bars = load_bars(catalog, snapshot, ["AAPL"], dt.date.min, dt.date.max)
    march = load_bars(catalog, snapshot, ["AAPL"], dt.date(2024, 3, 1), dt.date(2024, 3, 29))
    assert bars.height == march.height > 0
