"""The wire models refuse dates and numbers the platform cannot use, saying what to do."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from pitwall.models import FIRST_DATE, LAST_DATE, BacktestSpec, JobView, ProgressEvent

BASE: dict[str, Any] = {"dataset": "sample", "universe": ["AAPL"], "start": "2024-03-04",
                        "end": "2024-03-08"}


def _error(**overrides: Any) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        BacktestSpec.model_validate({**BASE, **overrides})
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return ".".join(str(p) for p in errors[0]["loc"]), errors[0]["msg"]


@pytest.mark.parametrize(("field", "value"), [
    ("end", "9999-12-31"), ("start", "0001-01-01"), ("start", "1899-12-31"),
    ("end", "2201-01-01"),
])
def test_dates_outside_the_supported_range_name_the_range(field: str, value: str) -> None:
    overrides = {field: value} if field == "end" else {field: value, "end": "2024-03-08"}
    where, message = _error(**overrides)
    assert where == field
    assert message == (f"{field} {value} is outside the dates Pitwall supports, 1900-01-01 to "
                       "2200-12-31; pick a date inside the dataset's history")


def test_the_edges_of_the_range_are_accepted() -> None:
    spec = BacktestSpec.model_validate({**BASE, "start": FIRST_DATE, "end": LAST_DATE})
    assert (spec.start, spec.end) == (dt.date(1900, 1, 1), dt.date(2200, 12, 31))


@pytest.mark.parametrize(("overrides", "where", "message"), [
    ({"capital": float("nan")}, "capital",
     "capital must be a finite number of dollars, e.g. 1000000"),
    ({"capital": "NaN"}, "capital", "capital must be a finite number of dollars, e.g. 1000000"),
    ({"capital": "-inf"}, "capital", "capital must be a finite number of dollars, e.g. 1000000"),
    ({"costs": {"commission_bps": float("inf")}}, "costs.commission_bps",
     "commission_bps must be a finite number of basis points, e.g. 1.5"),
    ({"costs": {"borrow_bps": "nan"}}, "costs.borrow_bps",
     "borrow_bps must be a finite number of basis points a year, e.g. 50"),
    ({"execution": {"max_gross": float("nan")}}, "execution.max_gross",
     "max_gross must be a finite multiple of capital, e.g. 2"),
    ({"risk_free": float("nan")}, "risk_free",
     "risk_free must be a finite annual rate, e.g. 0.04 (4%)"),
    ({"limits": {"timeout_s": float("inf")}}, "limits.timeout_s",
     "timeout_s must be a finite number of seconds, e.g. 600"),
    ({"params": {"fast": 5, "band": [0.5, float("nan")]}}, "params",
     "parameter 'band' must hold finite numbers, e.g. 0.5; NaN and infinity cannot be sent"),
])
def test_non_finite_numbers_get_a_sentence(overrides: dict[str, Any], where: str,
                                            message: str) -> None:
    assert _error(**overrides) == (where, message)


def test_nan_in_json_is_refused_with_the_same_sentence() -> None:
    raw = json.dumps({**BASE, "capital": float("nan")})  # the NaN literal json emits
    with pytest.raises(ValidationError, match="capital must be a finite number of dollars"):
        BacktestSpec.model_validate_json(raw)


def test_bounds_and_types_keep_their_own_messages() -> None:
    assert _error(capital=2e15)[1].startswith("Input should be less than or equal to")
    assert _error(capital="lots")[1].startswith("Input should be a valid number")


def test_views_and_events_show_only_printable_text() -> None:
    now = dt.datetime.now(dt.UTC)
    view = JobView.model_validate({
        "id": "j", "status": "FAILED", "spec": BASE, "researcher": "r", "attempt": 1,
        "created_at": now, "bundle_sha256": "0" * 64,
        "reason": "strategy raised ValueError: \x1b[2J\x1b]0;pwned\x07boom\nmore"})
    assert view.reason == "strategy raised ValueError: boom more"
    event = ProgressEvent(job_id="j", seq=1, kind="status", at=now, status="FAILED",
                          message="a\x1b[31mb\x9b", data={"reason": "\x1b]0;t\x07x",
                                                         "nested": ["\x07"]})
    assert event.message == "ab\ufffd"
    assert event.data == {"reason": "x", "nested": ["\ufffd"]}
