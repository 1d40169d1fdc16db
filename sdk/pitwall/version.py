"""The SDK's version: recorded in every bundle's manifest and run manifest
(docs/architecture.md §1.3). Its own module so that ``bundle`` need not import the
``pitwall`` face, which loads the notebook tools on demand."""

from __future__ import annotations

__version__ = "0.1.0"
