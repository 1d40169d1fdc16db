"""Every error the API can answer, mapped from exceptions in one place.

400 bad input (field-level), 401/403, 404, 409 (cancel a finished job), 413 (bundle too
large), 415 (wrong content type), 503 (the metadata database, or another part of the
platform such as an S3 lake, is unreachable; with a ``Retry-After`` header, which
``pitwall.Client`` honours). Anything else is a bug: 500, logged with its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from tornado.web import HTTPError

from pitwall.errors import (
    BundleError,
    DataError,
    EmptyRangeError,
    InfrastructureError,
    UnknownDatasetError,
    UnknownSymbolError,
)
from pitwall_executor.api.models import ErrorResponse, FieldError
from pitwall_executor.jobs.store import JobNotFoundError, database_unreachable
from pitwall_executor.jobs.sweeps import SweepError

DB_DOWN = ("the metadata database is unreachable; the job store is temporarily unavailable. "
           "Retry in a few seconds; no submitted job is lost")
#: Seconds a 503 asks the client to wait before it retries: a database restart takes a few.
RETRY_AFTER_S = 2


class ApiError(Exception):
    """An answer other than success, with the status, a code and a sentence.

    ``retry_after`` (seconds) becomes the ``Retry-After`` header; every 503 has one.
    """

    def __init__(self, status: int, code: str, message: str,
                 fields: Sequence[FieldError] = (), *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)
        self.retry_after = RETRY_AFTER_S if retry_after is None and status == 503 else retry_after

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=self.code, message=self.message, fields=self.fields)


def bad_request(field: str, message: str) -> ApiError:
    """A 400 about one field."""
    return ApiError(400, "bad_request", f"{field}: {message}", [FieldError(field=field,
                                                                         message=message)])


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist or is not yours; check the id")


def _validation(exc: ValidationError, prefix: str) -> ApiError:
    fields = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        fields.append(FieldError(field=f"{prefix}.{loc}" if loc else prefix, message=err["msg"]))
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields)
    return ApiError(400, "invalid_spec", f"invalid backtest spec: {summary}", fields)


def _data_field(exc: DataError) -> str:
    if isinstance(exc, UnknownDatasetError):
        return "spec.dataset"
    if isinstance(exc, UnknownSymbolError):
        return "spec.universe"
    if isinstance(exc, EmptyRangeError):
        return "spec.start"
    return "spec"


def _input_error(exc: BaseException) -> ApiError | None:
    if isinstance(exc, ValidationError):
        return _validation(exc, "spec")
    if isinstance(exc, SweepError):
        return ApiError(400, "invalid_grid", f"grid: {exc}",
                        [FieldError(field="grid", message=str(exc))])
    if isinstance(exc, BundleError):
        return ApiError(400, "invalid_bundle", f"bundle: {exc}",
                        [FieldError(field="bundle", message=str(exc))])
    if isinstance(exc, DataError):
        field = _data_field(exc)
        return ApiError(400, "invalid_data_request", f"{field}: {exc}",
                        [FieldError(field=field, message=str(exc))])
    return None


def to_api_error(exc: BaseException) -> ApiError | None:
    """The API error for ``exc``, or None when it is a bug (answered 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InfrastructureError):
        # Before the input errors: a lake that cannot be read (an S3 outage) is a DataError
        # too, but the request was fine; the client should retry it, not change it.
        return ApiError(503, "platform_unavailable", f"{exc}. This is a platform outage, not "
                        "a fault of the request: retry in a few seconds")
    err = _input_error(exc)
    if err is None and isinstance(exc, JobNotFoundError):
        err = not_found("this job")
    if err is None and database_unreachable(exc):
        err = ApiError(503, "database_unavailable", DB_DOWN)
    if err is None and isinstance(exc, HTTPError):
        message = exc.log_message or exc.reason or "request failed"
        if exc.args and exc.log_message:
            message = message % exc.args
        err = ApiError(exc.status_code, _code(exc.status_code), message)
    return err


def _code(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict", 413: "too_large",
            415: "unsupported_media_type"}.get(status, "error")
