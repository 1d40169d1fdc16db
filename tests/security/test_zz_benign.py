"""Runs last (file order): the benign job that ran beside every attack stayed correct."""

from __future__ import annotations

import pytest

from conftest import Env, results

pytestmark = pytest.mark.sandbox


def test_benign_jobs_beside_the_attacks_completed_with_the_metrics_of_a_run_alone(
    env: Env,
) -> None:
    views = list(env.benign_views)
    assert len(views) >= 3, "the benign worker should have run throughout the attacks"
    assert [v.status.value for v in views] == ["COMPLETED"] * len(views), \
        [v.reason for v in views]
    assert env.reference.metrics is not None
    assert all(results(v.metrics) == results(env.reference.metrics) for v in views)
