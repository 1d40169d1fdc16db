"""Kernel-side tools: the API client, ``%%backtest``, the ipywidgets panel, local quick runs
and local sweeps. They run in the researcher's kernel, never in the sandbox; local runs
execute strategy code unsandboxed, for iterating (docs/architecture.md §3)."""
