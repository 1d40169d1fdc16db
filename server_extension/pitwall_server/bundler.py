"""Notebook → strategy bundle: the SDK's one rule (:mod:`pitwall.notebook_bundle`,
docs/notebooks.md), re-exported for the server extension's handlers."""

from __future__ import annotations

from pitwall.notebook_bundle import (
    NotebookBundle,
    NotebookBundleError,
    NotebookPlan,
    bundle_notebook,
    params_of,
    plan_notebook,
    read_params,
)

__all__ = ["NotebookBundle", "NotebookBundleError", "NotebookPlan", "bundle_notebook",
           "params_of", "plan_notebook", "read_params"]
