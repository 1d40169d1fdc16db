"""What runs inside the sandbox: the runner, the in-sandbox cut re-runs, the simulated
clock and the event loop of the lock-step channel. Nothing here imports the trusted
engine, the notebook tools or Plotly (tests/sdk/test_import_contract.py checks it;
docs/architecture.md §3)."""
