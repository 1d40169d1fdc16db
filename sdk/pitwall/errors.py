"""Errors a researcher may see. Each message says what to do next."""

from __future__ import annotations


class PitwallError(Exception):
    """Base of every error Pitwall raises on purpose."""


class BundleError(PitwallError):
    """The strategy bundle is malformed, too large, or unsafe."""


class DataError(PitwallError):
    """The requested data does not exist or cannot be read."""


class UnknownDatasetError(DataError):
    """The dataset or its version does not exist."""


class UnknownSymbolError(DataError):
    """A symbol of the universe is not in the dataset."""


class EmptyRangeError(DataError):
    """The requested date range holds no bars."""


class StrategyOutputError(PitwallError):
    """What came out of the sandbox is not a valid strategy result."""


class SandboxError(PitwallError):
    """The sandbox could not be started or failed outside the strategy's control."""
