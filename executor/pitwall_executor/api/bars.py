"""``GET /v1/datasets/{dataset}/bars``: the bars a job would be given, as Parquet.

For a notebook's quick local check (``pitwall.Client.bars`` → ``pitwall.backtest``): the
same slice of the same pinned version that a job with this dataset, symbols and range
reads, loaded by the job's own code (``execution/attempt.py: load_slice``), so a quick run
and the sandboxed run see identical bars (docs/architecture.md §2, step 1; §6). The answer
is Parquet with exactly the columns a strategy receives (on a version with reference
data, the point-in-time ``adj_*`` columns too); the version read and its content digest
come back as headers, so a notebook can pin them.

``GET /v1/datasets/{dataset}/reference/{listings|corporate_actions}`` gives the version's
reference tables (docs/reference-data.md) as Parquet, empty when it has none, so a quick
run applies the same corporate actions as the job (``pitwall.Client.reference``).

Errors follow the API's style (``api/errors.py``): 400 naming the query field (bad
symbols, absurd dates, a range holding too many bars), 404 for an unknown dataset or
version, 401 without a valid token.
"""

from __future__ import annotations

import io
from typing import Any

from pydantic import ValidationError

from pitwall.errors import EmptyRangeError, UnknownDatasetError, UnknownSymbolError
from pitwall.models import BacktestSpec
from pitwall_executor.api.errors import ApiError, bad_request
from pitwall_executor.api.handlers import ApiHandler
from pitwall_executor.api.models import FieldError
from pitwall_executor.datalake.planner import validate_request
from pitwall_executor.datalake.reference import ACTIONS, LISTINGS, read_reference
from pitwall_executor.datalake.snapshot import Snapshot
from pitwall_executor.execution.attempt import load_slice, with_reference
from pitwall_executor.stack import Stack

PARQUET = "application/vnd.apache.parquet"
#: Bars one answer may hold: a quick local check runs in the researcher's kernel, and
#: 5 million minute bars are already ~2 GB once a strategy adds a few columns.
MAX_ROWS = 5_000_000
#: Query fields as they are named in the request, for the spec fields they fill.
_FIELDS = {"universe": "symbols", "start": "start", "end": "end", "version": "version",
           "dataset": "dataset"}


def bars_spec(dataset: str, symbols: str | None, start: str | None, end: str | None,
              version: str | None) -> BacktestSpec:
    """The data request of the query, validated as a job's spec is (same rules, same
    dates supported); a 400 naming the query field otherwise."""
    for name, raw in (("symbols", symbols), ("start", start), ("end", end)):
        if raw is None or not raw.strip():
            raise bad_request(name, "missing; e.g. ?symbols=AAPL,MSFT&start=2024-03-04"
                              "&end=2024-03-15")
    assert symbols is not None
    request: dict[str, Any] = {
        "dataset": dataset, "universe": [s.strip() for s in symbols.split(",") if s.strip()],
        "start": start, "end": end, "version": version}
    try:
        return BacktestSpec.model_validate(request)
    except ValidationError as exc:
        fields = [FieldError(field=_FIELDS.get(str(e["loc"][0]), "query") if e["loc"]
                             else "query", message=e["msg"]) for e in exc.errors()]
        summary = "; ".join(f"{f.field}: {f.message}" for f in fields)
        raise ApiError(400, "bad_request", f"invalid bars request: {summary}", fields) from None


def estimated_rows(snapshot: Snapshot, spec: BacktestSpec) -> int:
    """The bars the request holds, from the snapshot's metadata alone (files' rows scaled
    by the share of their symbols and days requested), so an oversized request is refused
    before anything is read."""
    wanted = set(spec.universe)
    total = 0.0
    for entry in validate_request(snapshot, spec.universe, spec.start, spec.end):
        days = [d for d in entry.days if spec.start <= d <= spec.end]
        symbols = wanted.intersection(entry.symbols)
        total += entry.rows * len(symbols) / max(len(entry.symbols), 1) * \
            len(days) / max(len(entry.days), 1)
    return round(total)


def _too_many(rows: int, limit: int) -> ApiError:
    message = (f"the request holds about {rows:,} bars; one answer is limited to "
               f"{limit:,}. Narrow the range (start, end) or ask for fewer symbols, and "
               "fetch the rest in further requests")
    return ApiError(400, "too_many_rows", message, [FieldError(field="end", message=message)])


def read_bars(stack: Stack, spec: BacktestSpec, limit: int) -> tuple[bytes, Snapshot]:
    """The Parquet bytes of the job's slice for ``spec``, and the version they come from."""
    try:
        snapshot = stack.catalog.snapshot(spec.dataset, spec.version)
        estimate = estimated_rows(snapshot, spec)
        if estimate > limit:
            raise _too_many(estimate, limit)
        # Pinned to the version just resolved: a commit in between cannot mix two versions.
        pinned = spec.model_copy(update={"version": snapshot.version})
        bars, _data = load_slice(stack, pinned)
        bars, _ = with_reference(stack, pinned, snapshot.version, bars)  # adj_* if any
    except UnknownDatasetError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except UnknownSymbolError as exc:
        raise bad_request("symbols", str(exc)) from None
    except EmptyRangeError as exc:
        raise bad_request("start", str(exc)) from None
    if bars.height > limit:
        raise _too_many(bars.height, limit)
    out = io.BytesIO()
    bars.write_parquet(out)
    return out.getvalue(), snapshot


class BarsHandler(ApiHandler):
    """``GET /v1/datasets/{dataset}/bars?symbols=A,B&start=&end=[&version=]``: Parquet."""

    route = "/v1/datasets/{dataset}/bars"
    #: The row limit of one answer (a class attribute, so a test can lower it).
    max_rows = MAX_ROWS

    async def get(self, dataset: str) -> None:
        arg = self.get_query_argument
        spec = bars_spec(dataset, arg("symbols", None), arg("start", None), arg("end", None),
                         arg("version", None))
        data, snapshot = await self.ctx.run(read_bars, self.ctx.stack, spec, self.max_rows)
        self.set_header("Content-Type", PARQUET)
        self.set_header("Pitwall-Data-Version", str(snapshot.version))
        self.set_header("Pitwall-Data-Digest", snapshot.content_digest)
        self.finish(data)



def read_table(stack: Stack, dataset: str, table: str, version: str | None) -> tuple[
        bytes, Snapshot]:
    """The Parquet bytes of one reference table of the version (latest unless given)."""
    if table not in (LISTINGS, ACTIONS):
        raise ApiError(404, "not_found", f"no reference table {table!r}; ask for "
                       f"{LISTINGS} or {ACTIONS}")
    try:
        number = int(version) if version is not None else None
    except ValueError:
        raise bad_request("version", f"{version!r} is not a version number") from None
    try:
        snapshot = stack.catalog.snapshot(dataset, number)
    except UnknownDatasetError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    reference = read_reference(stack.catalog, snapshot)
    out = io.BytesIO()
    (reference.listings if table == LISTINGS else reference.actions).write_parquet(out)
    return out.getvalue(), snapshot


class ReferenceHandler(ApiHandler):
    """``GET /v1/datasets/{dataset}/reference/{table}[?version=]``: Parquet."""

    route = "/v1/datasets/{dataset}/reference/{table}"

    async def get(self, dataset: str, table: str) -> None:
        data, snapshot = await self.ctx.run(read_table, self.ctx.stack, dataset, table,
                                            self.get_query_argument("version", None))
        self.set_header("Content-Type", PARQUET)
        self.set_header("Pitwall-Data-Version", str(snapshot.version))
        self.set_header("Pitwall-Data-Digest", snapshot.content_digest)
        self.finish(data)
