"""Bad submissions get the right 4xx, a message that says what to do, and leave nothing behind."""

from __future__ import annotations

import io
import zipfile

import pytest
import requests
from apikit import Api, bundle_bytes, spec_json


def _zip_with_traversal() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", "{}")
        zf.writestr("../evil.py", "x = 1")
    return buf.getvalue()


CASES = [
    # (what, bundle, spec, status, field, words in the message)
    ("not a zip", b"PK\x03\x04 garbage", spec_json(), 400, "bundle", "not a valid zip"),
    ("path traversal", _zip_with_traversal(), spec_json(), 400, "bundle", "bundle"),
    ("unknown dataset", None, spec_json(dataset="nope"), 400, "spec.dataset", "nope"),
    ("unknown symbol", None, spec_json(universe=["AAPL", "APPL"]), 400, "spec.universe", "APPL"),
    ("end before start", None, spec_json(start="2024-03-08", end="2024-03-04"), 400, "spec",
     "before start"),
    ("absurd limits", None, spec_json(limits={"memory_mb": 10**9, "timeout_s": -1}), 400,
     "spec.limits.memory_mb", "less than or equal"),
    ("spec not JSON", None, "{dataset:", 400, "spec", "JSON"),
    ("unknown field", None, spec_json(colour="red"), 400, "spec.colour", "not permitted"),
    ("empty range", None, spec_json(start="2030-01-01", end="2030-01-31"), 400, "spec.start",
     "2030"),
    ("oversized bundle", b"\0" * (1024 * 1024 + 10), spec_json(), 413, None, "1 MiB"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_submissions_are_refused_and_leave_nothing(api: Api, case: tuple[object, ...]) -> None:
    _what, bundle, spec, status, field, words = case
    before = api.files()
    res = api.submit(spec=str(spec), bundle=bundle if isinstance(bundle, bytes) else None)
    assert res.status_code == status, res.text
    body = res.json()
    assert str(words) in body["message"], body
    if field is not None:
        assert field in {f["field"] for f in body["fields"]}, body
    assert api.counts() == (0, 0)
    assert api.files() == before


def test_wrong_content_type_and_missing_parts(api: Api) -> None:
    url = api.url + "/v1/backtests"
    res = requests.post(url, headers={**api.headers("alice"), "Content-Type": "application/json"},
                        data=spec_json(), timeout=10)
    assert res.status_code == 415 and "multipart/form-data" in res.json()["message"]
    only_spec = api.post("/v1/backtests", files={"spec": (None, spec_json())})
    assert only_spec.status_code == 400 and only_spec.json()["fields"][0]["field"] == "bundle"
    only_bundle = api.post("/v1/backtests", files={"bundle": ("b.zip", bundle_bytes())})
    assert only_bundle.status_code == 400 and only_bundle.json()["fields"][0]["field"] == "spec"
    assert api.counts() == (0, 0)


def test_an_upload_far_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    # Content-Length alone decides: the 3 MiB body is never buffered.
    body = b"x" * (3 * 1024 * 1024)
    headers = {**api.headers("alice"), "Content-Type": "multipart/form-data; boundary=zz"}
    try:
        res = requests.post(api.url + "/v1/backtests", data=body, headers=headers, timeout=10)
    except requests.ConnectionError:
        pytest.fail("the server closed the connection instead of answering 413")
    assert res.status_code == 413 and "limited to 1 MiB" in res.json()["message"]
    assert api.counts() == (0, 0)


def test_a_good_submission_after_bad_ones_still_works(api: Api) -> None:
    assert api.submit(spec=spec_json(dataset="nope")).status_code == 400
    res = api.submit(spec=spec_json(version=1))
    assert res.status_code == 202
    job = api.get(f"/v1/backtests/{res.json()['id']}").json()
    assert job["spec"]["version"] == 1 and job["data_version"] == 1
    assert api.counts() == (1, 1)
