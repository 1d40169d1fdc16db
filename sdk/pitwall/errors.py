"""Errors a researcher may see. Each message says what to do next.

Two kinds of fault, one base each: :class:`StrategyError` (the researcher's code or inputs;
a rerun fails the same way, so never retried) and :class:`InfrastructureError` (the
platform; the worker retries the job, then fails it saying it was not the strategy's
fault). :class:`DataError` groups the data errors of both kinds.
"""

from __future__ import annotations


class PitwallError(Exception):
    """Base of every error Pitwall raises on purpose."""


class StrategyError(PitwallError):
    """The strategy's code or inputs are at fault; never retried."""


class InfrastructureError(PitwallError):
    """The platform failed (lake, object store, queue, database, sandbox), not the strategy."""

    #: Completes "rerun the job once …" in the reason of a job that ran out of attempts.
    rerun_when = "the platform is healthy again"


class BundleError(StrategyError):
    """The strategy bundle is malformed, too large, or unsafe."""


class DataError(PitwallError):
    """The requested data does not exist or cannot be read."""


class UnknownDatasetError(DataError, StrategyError):
    """The dataset or its version does not exist."""


class UnknownSymbolError(DataError, StrategyError):
    """A symbol of the universe is not in the dataset."""


class EmptyRangeError(DataError, StrategyError):
    """The requested date range holds no bars."""


class DataMismatchError(DataError, StrategyError):
    """The data behind a pinned ``dataset@version`` is not the data a run recorded."""


class StrategyOutputError(StrategyError):
    """What came out of the sandbox is not a valid strategy result."""


class SandboxError(InfrastructureError):
    """The sandbox could not be started or failed outside the strategy's control."""

    rerun_when = "the sandbox runtime (gVisor) works again"
