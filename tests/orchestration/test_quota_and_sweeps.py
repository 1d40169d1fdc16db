"""Per-researcher quota and parameter sweeps with real worker processes."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from conftest import Cluster, sleeper, spec
from pitwall.bundle import build_bundle
from pitwall.models import JobStatus

Make = Callable[..., Cluster]
SMA = Path(__file__).resolve().parents[2] / "examples" / "sma_crossover.py"


def test_one_researchers_backlog_does_not_starve_another(make_cluster: Make) -> None:
    c = make_cluster(max_running_per_researcher="1")
    backlog = [c.stack.submit_sweep(spec(), sleeper(2), {"i": [1, 2, 3]}, researcher="ada")]
    ada = [r.job_id for r in c.stack.store.sweep_results(backlog[0])]
    # Same lane as ada's children, queued behind all three of them.
    bob_sweep = c.stack.submit_sweep(spec(), sleeper(1), {"i": [9]}, researcher="bob")
    bob = c.stack.store.sweep_results(bob_sweep)[0].job_id
    c.worker("--slots", "2", "--grace", "5")
    for job in [*ada, bob]:
        assert c.wait_done(job, timeout=120).status is JobStatus.COMPLETED
    spans = {job: c.rows("SELECT started_at, finished_at FROM attempts WHERE job_id = :j",
                         j=job)[0] for job in [*ada, bob]}
    ada_spans = sorted(spans[j] for j in ada)
    for (_, end), (start, _) in itertools.pairwise(ada_spans):
        assert start >= end  # never two of ada's jobs at once
    assert spans[bob][0] < ada_spans[1][0]  # bob's job did not wait for ada's backlog
    assert c.stack.store.get(backlog[0]).status is JobStatus.COMPLETED


def test_the_quota_holds_sweep_runs_but_never_interactive_ones(make_cluster: Make) -> None:
    c = make_cluster(max_running_per_researcher="1")
    sweep = c.stack.submit_sweep(spec(), sleeper(3), {"i": [1, 2]}, researcher="ada")
    kids = [r.job_id for r in c.stack.store.sweep_results(sweep)]
    solo = c.submit(sleeper(3), researcher="ada")
    c.worker("--slots", "2", "--grace", "5")
    for job in [solo, *kids]:
        assert c.wait_done(job, timeout=120).status is JobStatus.COMPLETED, c.log_tail()
    span = {job: c.rows("SELECT started_at, finished_at FROM attempts WHERE job_id = :j",
                        j=job)[0] for job in [solo, *kids]}
    first, second = sorted(span[k] for k in kids)
    # ada's interactive run neither waited for her sweep run nor used up her quota...
    assert first[0] < span[solo][1] and span[solo][0] < first[1]
    # ...while her sweep runs still went one at a time.
    assert second[0] >= first[1]


def test_a_two_by_two_sweep_of_the_sma_example_completes_with_four_results(
    make_cluster: Make,
) -> None:
    c = make_cluster()
    bundle = build_bundle({"strategy.py": SMA.read_bytes()}, entrypoint="strategy.py")
    parent = c.stack.submit_sweep(spec(), bundle, {"fast": [5, 10], "slow": [30, 60]},
                                  researcher="ada")
    c.worker("--slots", "2", "--grace", "5")
    view = c.wait_done(parent, timeout=150)
    assert view.status is JobStatus.COMPLETED and view.progress == 1.0, c.log_tail()
    rows = c.stack.store.sweep_results(parent)
    assert [r.params for r in rows] == [{"fast": 5, "slow": 30}, {"fast": 5, "slow": 60},
                                        {"fast": 10, "slow": 30}, {"fast": 10, "slow": 60}]
    assert all(r.status is JobStatus.COMPLETED and r.metrics is not None for r in rows)
    assert len({r.metrics.sharpe for r in rows if r.metrics}) == 4
    kinds = [e.status for e in c.stack.store.events(parent) if e.kind == "status"]
    assert kinds == [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED]
