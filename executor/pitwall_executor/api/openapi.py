"""The OpenAPI 3.1 document of the API, served at ``/v1/openapi.json``.

Schemas come from the pydantic models' JSON Schema (one source with the handlers);
the paths below list exactly the statuses the handlers answer, and a schemathesis run
against the live server (tests/api/test_openapi.py) keeps the two honest.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from pitwall.models import BacktestSpec, JobStatus, JobView, ProgressEvent
from pitwall_executor.api.bars import PARQUET
from pitwall_executor.api.models import (
    CreateBacktestResponse,
    CreateSweepResponse,
    ErrorResponse,
    HealthResponse,
    ListBacktestsResponse,
    SweepResultsResponse,
)

_MESSAGES = {
    400: "Bad input; `fields` names each wrong field and says what to do (for bars: "
         "unknown symbols, dates outside the data, or more bars than one answer holds).",
    401: "Missing or invalid bearer token.",
    403: "Not allowed (an admin-only filter, or an invalid or expired signed link).",
    404: "No such job, or the job is not yours (the two are not told apart); for bars, "
         "no such dataset or version.",
    409: "The job already ended; there is nothing to cancel.",
    413: "The bundle is larger than the configured limit.",
    415: "The request body is not multipart/form-data.",
    503: "The metadata database or another part of the platform is unreachable, or (for a "
         "report, trades or positions file of a job that just COMPLETED) the file is still "
         "being written after the job's commit; retry shortly (Retry-After).",
}


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


#: How a submitted spec's costs are settled (docs/engine-conventions.md §2.3).
COSTS_NOTE = ("A spec that leaves out `costs_preset` gets the deployment's default preset "
              "(`default_costs_preset`, retail unless configured), stored in the job's spec "
              "with its values under the cost and execution fields the spec sets; send "
              "only the fields you set. `costs_preset: frictionless` asks for no costs.")


def _op(summary: str, ok: dict[str, Any], errors: tuple[int, ...], *, auth: bool = True,
        **extra: Any) -> dict[str, Any]:
    err = {"$ref": "#/components/schemas/ErrorResponse"}
    op: dict[str, Any] = {"summary": summary, "responses": {
        **ok, **{str(code): _json(err, _MESSAGES[code]) for code in errors}}}
    op["security"] = [{"bearer": []}] if auth else []
    op.update(extra)
    return op


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


JOB_ID = _param("id", "path", {"type": "string"}, "The job id returned by the submission.")


def _paths(refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    job_errors = (401, 404, 503)
    text = {"description": "Plain text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    list_params = [
        _param("status", "query", {"type": "string", "enum": [s.value for s in JobStatus]},
               "Only jobs in this status."),
        _param("researcher", "query", {"type": "string"},
               "Only this researcher's jobs (admins; others may only name themselves)."),
        _param("since", "query", {"type": "string", "format": "date-time"},
               "Created at or after this time."),
        _param("until", "query", {"type": "string", "format": "date-time"},
               "Created before this time."),
        _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200,
                                  "default": 50}, "Page size."),
        _param("cursor", "query", {"type": "string"}, "`next_cursor` of the previous page."),
    ]
    bars_params = [
        _param("dataset", "path", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
               "The dataset, e.g. sample."),
        _param("symbols", "query", {"type": "string", "minLength": 1},
               "Comma-separated symbols, e.g. AAPL,MSFT.", required=True),
        _param("start", "query", {"type": "string", "format": "date"},
               "First day (UTC), inclusive.", required=True),
        _param("end", "query", {"type": "string", "format": "date"},
               "Last day (UTC), inclusive.", required=True),
        _param("version", "query", {"type": "integer", "minimum": 0},
               "The dataset version; the latest when left out."),
    ]
    submit_body = {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["spec"], "properties": {
            "bundle": {"type": "string", "format": "binary",
                       "description": "The strategy bundle zip (pitwall.bundle.build_bundle)."},
            "notebook": {"type": "string", "format": "binary",
                         "description": "Instead of a bundle: a notebook (.ipynb), bundled "
                                        "by the Run Backtest button's rule (its one strategy "
                                        "and the cells it needs; docs/notebooks.md). The "
                                        "engine is the strategy's kind."},
            "strategy": {"type": "string", "description": "With a notebook: the strategy "
                         "to run when it defines several."},
            "spec": refs["BacktestSpec"]}},
        "encoding": {"spec": {"contentType": "application/json"}}}}}
    scalar = {"type": ["string", "number", "boolean", "null"]}
    value = {"anyOf": [scalar, {"type": "array", "items": scalar}]}  # as BacktestSpec.params
    grid = {"type": "object", "minProperties": 1,
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": "array", "minItems": 1, "items": value},
            "description": "Parameter → list of values; one child run per combination "
                           "(at most 1000 runs). Each point overrides spec.params."}
    sweep_body = {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["bundle", "spec", "grid"], "properties": {
            "bundle": {"type": "string", "format": "binary",
                       "description": "The strategy bundle zip (pitwall.bundle.build_bundle)."},
            "spec": refs["BacktestSpec"], "grid": grid}},
        "encoding": {"spec": {"contentType": "application/json"},
                     "grid": {"contentType": "application/json"}}}}}
    return {
        "/v1/datasets/{dataset}/bars": {"get": _op(
            "The bars a job with this dataset, symbols and range would read, as Parquet "
            "(for a quick local check; pitwall.Client.bars). The version read and its "
            "content digest are the Pitwall-Data-Version and Pitwall-Data-Digest headers",
            {"200": {"description": "Parquet: ts (timestamp µs, UTC), symbol, open, high, "
                                    "low, close, volume (and adj_open … adj_volume on a "
                                    "version with reference data), sorted by (symbol, ts)",
                     "content": {PARQUET: {"schema": {"type": "string",
                                                      "format": "binary"}}}}},
            (400, 401, 404, 503), parameters=bars_params)},
        "/v1/datasets/{dataset}/reference/{table}": {"get": _op(
            "A reference table of the version (listings or corporate_actions; "
            "docs/reference-data.md), as Parquet, empty when the version has none (for a "
            "quick local check with the job's corporate actions; pitwall.Client.reference)",
            {"200": {"description": "Parquet with the table's columns",
                     "content": {PARQUET: {"schema": {"type": "string",
                                                      "format": "binary"}}}}},
            (400, 401, 404, 503), parameters=[
                bars_params[0],
                _param("table", "path", {"type": "string",
                                         "enum": ["listings", "corporate_actions"]},
                       "Which table."),
                bars_params[-1]])},
        "/v1/sweeps": {"post": _op(
            "Submit a parameter sweep: one child backtest per point of the grid",
            {"202": _json(refs["CreateSweepResponse"], "Accepted; every child is queued")},
            (400, 401, 413, 415, 503), requestBody=sweep_body, description=COSTS_NOTE)},
        "/v1/sweeps/{id}": {"get": _op(
            "A sweep's aggregate status and progress, and its results table (one row per "
            "child: parameters, status, metrics)",
            {"200": _json(refs["SweepResultsResponse"], "The sweep and its results")},
            job_errors, parameters=[JOB_ID])},
        "/v1/backtests": {
            "post": _op("Submit a backtest", {"202": _json(refs["CreateBacktestResponse"],
                                                          "Accepted and queued")},
                        (400, 401, 413, 415, 503), requestBody=submit_body,
                        description=COSTS_NOTE),
            "get": _op("List backtests, newest first",
                       {"200": _json(refs["ListBacktestsResponse"], "One page of jobs")},
                       (400, 401, 403, 503), parameters=list_params),
        },
        "/v1/backtests/{id}": {"get": _op(
            "Status, progress and metrics of a job", {"200": _json(refs["JobView"], "The job")},
            job_errors, parameters=[JOB_ID])},
        "/v1/backtests/{id}/cancel": {"post": _op(
            "Cancel a job", {"202": _json(refs["JobView"], "Cancelled, or cancel requested")},
            (401, 404, 409, 503), parameters=[JOB_ID])},
        "/v1/backtests/{id}/logs": {"get": _op(
            "The strategy's log", {"200": text}, job_errors, parameters=[JOB_ID])},
        "/v1/backtests/{id}/report": {"get": _op(
            "Redirect to a signed, expiring URL of the HTML report",
            {"302": {"description": "Location is the signed URL"}}, job_errors,
            parameters=[JOB_ID])},
        "/v1/backtests/{id}/artifacts/{name}": {"get": _op(
            "Redirect to a signed, expiring URL of one artifact (equity.parquet, "
            "metrics.json, trades.parquet, log.txt, report.html…)",
            {"302": {"description": "Location is the signed URL"}}, job_errors,
            parameters=[JOB_ID, _param("name", "path", {"type": "string",
                                                        "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                                       "The artifact's file name.")])},
        "/v1/backtests/{id}/rerun": {"post": _op(
            "Run the job again from its manifest (same bundle, pinned data version)",
            {"202": _json(refs["CreateBacktestResponse"], "Accepted and queued")},
            (400, 401, 404, 503), parameters=[JOB_ID],
            description="The stored spec runs as it is: its costs preset and costs are not "
                        "resolved again.")},
        "/v1/backtests/{id}/events": {"get": _op(
            "WebSocket of the job's events (ProgressEvent JSON messages)",
            {"101": {"description": "Switching to the WebSocket protocol"}},
            (400, 401, 404, 503), parameters=[JOB_ID, _param(
                "after", "query", {"type": "integer", "minimum": 0},
                "Resume after this event seq.")], **{"x-websocket": True})},
        "/healthz": {"get": _op("Liveness and database reachability",
                                {"200": _json(refs["HealthResponse"], "Healthy")}, (503,),
                                auth=False)},
        "/metrics": {"get": _op("Prometheus metrics", {"200": text}, (), auth=False)},
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI document (computed once)."""
    models: list[tuple[type[BaseModel], Any]] = [
        (BacktestSpec, "validation"), (JobView, "serialization"),
        (ProgressEvent, "serialization"), (CreateBacktestResponse, "serialization"),
        (ListBacktestsResponse, "serialization"), (ErrorResponse, "serialization"),
        (HealthResponse, "serialization"), (CreateSweepResponse, "serialization"),
        (SweepResultsResponse, "serialization"),
    ]
    keys, schema = models_json_schema(models, ref_template="#/components/schemas/{model}")
    refs = {model.__name__: dict(ref) for (model, _mode), ref in keys.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Pitwall Backtest API", "version": "1",
                 "description": "Submit sandboxed backtests, follow them, fetch results."},
        "paths": _paths(refs),
        "components": {"schemas": schema.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
